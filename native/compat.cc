// Definitions the compiler's headers expect from a newer libstdc++ than the
// oldest one the prebuilt addon supports (see compat.h). Defined here, the
// addon's references resolve to them instead of to versioned imports; a
// newer libstdc++ already loaded by the process may serve them instead, which
// is the same code.
#include <cstring>
#include <memory>
#include <new>
#include <typeinfo>

namespace std {

// GLIBCXX_3.4.29 (GCC 11): thrown by allocator<T>::allocate for sizes no
// allocation can reach.
void __throw_bad_array_new_length() {
  throw std::bad_array_new_length();
}

// GLIBCXX_3.4.26 (GCC 9): make_shared's control block recognising its own tag
// (called because the addon is built without RTTI; libstdc++ compares names).
bool _Sp_make_shared_tag::_S_eq(const type_info& ti) noexcept {
  const char* name = ti.name();
  return std::strcmp(name[0] == '*' ? name + 1 : name, "St19_Sp_make_shared_tag") == 0;
}

}  // namespace std
