// Where JS enters the addon. A Worker being terminated keeps running JS for a
// while (the microtasks in flight, the rest of a function), but from the
// moment terminate() is called every N-API call that could run JS fails.
// node-addon-api answers a failed call with an empty Value whose env is null,
// and the next call on that value is a fatal error (Error::New(nullptr)); a
// failed napi_create_promise left Napi::Promise::Deferred's value
// uninitialised, and JS crashed on it. So each entry point asks first, and
// does nothing once nobody is left to see its result (JS gets undefined).
#pragma once

#include <napi.h>

namespace ct {

// True while JS can run in `env`: napi_strict_equals is the cheapest call
// that makes N-API's own check (an exception pending, or the environment
// stopping) and nothing else.
inline bool JsCanRun(napi_env env) {
  napi_value undefined;
  bool same = false;
  return napi_get_undefined(env, &undefined) == napi_ok &&
         napi_strict_equals(env, undefined, undefined, &same) == napi_ok;
}

// Stricter: true while a JS function can actually be called in `env`, which
// settling a promise needs (PromiseWorker::OnOK). Creating a value, and the
// check above, can still succeed while V8 is terminating; calling a trivial
// function is the one probe that fails exactly then.
inline bool JsCanBeCalled(napi_env env) {
  napi_value global, fn, result;
  if (napi_get_global(env, &global) != napi_ok) return false;
  if (napi_get_named_property(env, global, "Boolean", &fn) != napi_ok) return false;
  return napi_call_function(env, global, fn, 0, nullptr, &result) == napi_ok;
}

// Napi::ObjectWrap whose methods are registered as
// InstanceMethod("name", &T::Entry<&T::Method>): each call is checked first.
// (node-addon-api's own napi_unwrap of `this` fails in that state too, in the
// Node versions read; this check does not depend on it.)
template <typename T>
class JsObjectWrap : public Napi::ObjectWrap<T> {
 public:
  explicit JsObjectWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<T>(info) {}

 protected:
  template <Napi::Value (T::*Method)(const Napi::CallbackInfo&)>
  Napi::Value Entry(const Napi::CallbackInfo& info) {
    if (!JsCanRun(info.Env())) return Napi::Value();
    return (static_cast<T*>(this)->*Method)(info);
  }
};

// The same check for a free function: Napi::Function::New(env, JsEntry<Fn>, name).
template <Napi::Value (*Fn)(const Napi::CallbackInfo&)>
Napi::Value JsEntry(const Napi::CallbackInfo& info) {
  if (!JsCanRun(info.Env())) return Napi::Value();
  return Fn(info);
}

// The property calls below are JS calls too, and can fail in the middle of a
// method once terminate() lands. node-addon-api's Get() then returns an empty
// value, and the next call on it is fatal: these return undefined (a valid
// value, whose further calls fail harmlessly) and false instead.

// o[key], or undefined.
inline Napi::Value Prop(const Napi::Object& o, const char* key) {
  napi_value v = nullptr;
  if (napi_get_named_property(o.Env(), o, key, &v) != napi_ok) return o.Env().Undefined();
  return Napi::Value(o.Env(), v);
}

// o[index], or undefined.
inline Napi::Value Prop(const Napi::Object& o, uint32_t index) {
  napi_value v = nullptr;
  if (napi_get_element(o.Env(), o, index, &v) != napi_ok) return o.Env().Undefined();
  return Napi::Value(o.Env(), v);
}

// Boolean(v), or false.
inline bool Truthy(const Napi::Value& v) {
  napi_value b = nullptr;
  bool result = false;
  return !v.IsEmpty() && napi_coerce_to_bool(v.Env(), v, &b) == napi_ok &&
         napi_get_value_bool(v.Env(), b, &result) == napi_ok && result;
}

}  // namespace ct
