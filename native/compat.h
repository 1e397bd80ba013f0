// Keeps the prebuilt addon loadable where Node 20 itself runs (glibc 2.28,
// libstdc++ of GCC 8), not only on the build machine (Debian 12: glibc 2.36,
// GCC 12). binding.gyp force-includes this file into every translation unit.
// scripts/abi-floor.mjs fails the build when a newer symbol version appears.
#pragma once

// GCC 12 gave condition_variable::wait a new symbol version (GLIBCXX_3.4.30);
// the GLIBCXX_3.4.11 one is the same function.
__asm__(".symver _ZNSt18condition_variable4waitERSt11unique_lockISt5mutexE,"
        "_ZNSt18condition_variable4waitERSt11unique_lockISt5mutexE@GLIBCXX_3.4.11");

// glibc 2.34 moved dlopen and dladdr into libc under a new version; the old
// versions are the same functions, there as compat symbols. Before 2.34 (and
// on musl, which has no symbol versions) a plain reference is what links,
// resolved at load time from the libdl that node itself has loaded.
#include <features.h>
#if defined(__GLIBC__) && __GLIBC_PREREQ(2, 34)
#if defined(__x86_64__)
__asm__(".symver dlopen,dlopen@GLIBC_2.2.5");
__asm__(".symver dladdr,dladdr@GLIBC_2.2.5");
#elif defined(__aarch64__)
__asm__(".symver dlopen,dlopen@GLIBC_2.17");
__asm__(".symver dladdr,dladdr@GLIBC_2.17");
#endif
#endif
