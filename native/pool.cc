#include "pool.h"

#include "convert.h"
#include "js_entry.h"

namespace ct {

PromiseWorker::PromiseWorker(Napi::Env env, const char* op, napi_deferred deferred, std::function<int()> exec,
                             std::function<Napi::Value(Napi::Env)> done)
    : Napi::AsyncWorker(env, op), deferred_(deferred), op_(op), exec_(std::move(exec)), done_(std::move(done)) {}

void PromiseWorker::OnOK() {
  Napi::Env env = Env();
  // Nobody is left to see the promise settle; the native work is done.
  if (!JsCanBeCalled(env)) return;
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
