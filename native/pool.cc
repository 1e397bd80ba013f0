#include "pool.h"

#include "convert.h"

namespace ct {

PromiseWorker::PromiseWorker(Napi::Env env, const char* op, napi_deferred deferred, std::function<int()> exec,
                             std::function<Napi::Value(Napi::Env)> done)
    : Napi::AsyncWorker(env, op), deferred_(deferred), op_(op), exec_(std::move(exec)), done_(std::move(done)) {}

namespace {
// While a Worker's environment is torn down (or terminated), JS cannot run:
// settling a promise or building a value fails, and node-addon-api (built
// without C++ exceptions) turns such a failure into a fatal error. Calling a
// trivial JS function is the one probe that fails exactly then; creating a
// value alone can still succeed while V8 is terminating.
bool CanRunJs(napi_env env) {
  napi_value global, fn, result;
  if (napi_get_global(env, &global) != napi_ok) return false;
  if (napi_get_named_property(env, global, "Boolean", &fn) != napi_ok) return false;
  return napi_call_function(env, global, fn, 0, nullptr, &result) == napi_ok;
}
}  // namespace

void PromiseWorker::OnOK() {
  Napi::Env env = Env();
  // Nobody is left to see the promise settle; the native work is done.
  if (!CanRunJs(env)) return;
  if (rc_ < 0) {
    napi_reject_deferred(env, deferred_, ErrnoError(env, -rc_, op_).Value());
    return;
  }
  napi_resolve_deferred(env, deferred_, done_ ? done_(env) : env.Undefined());
}

Napi::Value RunOnPool(Napi::Env env, const char* op, std::function<int()> exec,
                      std::function<Napi::Value(Napi::Env)> done) {
  napi_deferred deferred = nullptr;
  napi_value promise = nullptr;
  if (napi_create_promise(env, &deferred, &promise) != napi_ok) return Napi::Value();
  auto* w = new PromiseWorker(env, op, deferred, std::move(exec), std::move(done));
  w->Queue();
  return Napi::Value(env, promise);
}

}  // namespace ct
