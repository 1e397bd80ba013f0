// Keeps the prebuilt addon loadable where Node 20 itself runs (glibc 2.28,
// libstdc++ of GCC 8), not only on the build machine (Debian 12: glibc 2.36,
// GCC 12). binding.gyp force-includes this file into every translation unit.
// scripts/abi-floor.mjs fails the build when a newer symbol version appears.
#pragma once

// GCC 12 gave condition_variable::wait a new symbol version (GLIBCXX_3.4.30);
// the GLIBCXX_3.4.11 one is the same function.
__asm__(".symver _ZNSt18condition_variable4waitERSt11unique_lockISt5mutexE,"
        "_ZNSt18condition_variable4waitERSt11unique_lockISt5mutexE@GLIBCXX_3.4.11");
