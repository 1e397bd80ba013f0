// Work for the libuv thread pool, settled as a promise on the JS thread:
// every request of a Handle runs through RunOnPool, never on the JS thread.
// Execute() runs on a pool thread, OnOK() on the JS thread, where it settles
// the promise only while JS can still run (a terminating Worker's promises
// stay unsettled: nobody is left to see them).
#pragma once

#include <napi.h>

#include <functional>

namespace ct {

// Runs `exec` on the thread pool; resolves with `done(env)` or rejects with
// an errno error tagged with `op`. The promise is raw N-API, not
// Napi::Promise::Deferred: that one leaves its value uninitialised when
// napi_create_promise fails (as it does once a terminating Worker can no
// longer call into JS), and returning it to JS crashed the Worker.
class PromiseWorker : public Napi::AsyncWorker {
 public:
  PromiseWorker(Napi::Env env, const char* op, napi_deferred deferred, std::function<int()> exec,
                std::function<Napi::Value(Napi::Env)> done);
  void Execute() override { rc_ = exec_(); }
  void OnOK() override;
  void OnError(const Napi::Error& e) override { napi_reject_deferred(Env(), deferred_, e.Value()); }

 private:
  napi_deferred deferred_;
  const char* op_;
  std::function<int()> exec_;
  std::function<Napi::Value(Napi::Env)> done_;
  int rc_ = 0;
};

// Queues `exec` on the thread pool; returns the promise of `done(env)`, or of
// an errno error tagged `op` when exec returns -errno. Returns an empty value
// (undefined to JS, and `exec` never runs) when no promise can be made: an
// exception is pending, or the environment is terminating.
Napi::Value RunOnPool(Napi::Env env, const char* op, std::function<int()> exec,
                      std::function<Napi::Value(Napi::Env)> done);

}  // namespace ct
