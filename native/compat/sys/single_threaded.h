// Shadows glibc's <sys/single_threaded.h> (found first through binding.gyp's
// include path). libstdc++ 12 reads glibc's __libc_single_threaded (glibc
// 2.32+) to skip atomic reference counts in single-threaded processes; the
// prebuilt addon must load on older glibc, and it always runs threads anyway,
// so "not single-threaded" is the true answer and keeps the atomics.
#pragma once
#define __libc_single_threaded conntrack_libc_single_threaded
inline constexpr char conntrack_libc_single_threaded = 0;
