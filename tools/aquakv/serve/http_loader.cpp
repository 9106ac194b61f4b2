// Loads the HTTP server module (http_server.h, make_http_server): kHttpModule from the
// executable's directory, its entry point aquakv_http_server_create.
#include <dlfcn.h>
#include <unistd.h>

#include <climits>
#include <string>

#include "aquakv/util/error.h"
#include "http_server.h"

namespace aquakv::serve {

std::unique_ptr<HttpServer> make_http_server(Scheduler& sched, const Tokenizer& tok, const HttpOptions& opt) {
  char exe[PATH_MAX];
  const ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0) fail("aquakv serve: cannot find the executable's directory (/proc/self/exe) to load {}", kHttpModule);
  std::string path(exe, size_t(n));
  path = path.substr(0, path.rfind('/') + 1) + kHttpModule;
  // Kept loaded for the rest of the process: the server's code runs until exit.
  void* lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) fail("aquakv serve: cannot load the HTTP server module {}: {}", path, dlerror());
  using Create = HttpServer* (*)(Scheduler*, const Tokenizer*, const HttpOptions*, std::string*);
  auto create = reinterpret_cast<Create>(dlsym(lib, "aquakv_http_server_create"));
  if (create == nullptr) fail("aquakv serve: {} has no entry point aquakv_http_server_create", path);
  std::string error;
  HttpServer* s = create(&sched, &tok, &opt, &error);
  if (s == nullptr) fail("aquakv serve: {}", error);
  return std::unique_ptr<HttpServer>(s);
}

}  // namespace aquakv::serve
