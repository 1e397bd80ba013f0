{
  "targets": [
    {
      "target_name": "conntrack",
      "sources": [
        "native/addon.cc",
        "native/bulk.cc",
        "native/change.cc",
        "native/compat.cc",
        "native/cursor.cc",
        "native/convert.cc",
        "native/decode.cc",
        "native/events.cc",
        "native/flow_json.cc",
        "native/handle.cc",
        "native/pool.cc",
        "native/match.cc",
        "native/netns.cc",
        "native/process.cc",
        "native/request.cc",
        "native/socket.cc",
        "native/table.cc",
        "native/unshare.cc"
      ],
      "include_dirs": ["native/compat", "<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED", "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS"],
      "cflags_cc": ["-include", "<(module_root_dir)/native/compat.h", "-std=c++17", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "<!@(pkg-config --cflags libnetfilter_conntrack libmnl)"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17"],
      "libraries": ["<!@(pkg-config --libs libnetfilter_conntrack libmnl)"]
    }
  ]
}
