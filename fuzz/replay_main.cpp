// Replays a fuzz corpus in a normal (non-fuzzing) build: feeds every file of the directories
// given on the command line to the target's LLVMFuzzerTestOneInput, the same entry point
// libFuzzer calls. CTest runs it as fuzz_replay_<target> on fuzz/corpus/<target>; a crash or an
// exception other than aquakv::Error (which each entry catches) fails the test.
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR...\n", argv[0]);
    return 2;
  }
  int64_t n = 0;
  for (int i = 1; i < argc; ++i) {
    std::vector<std::filesystem::path> files;
    for (const auto& e : std::filesystem::directory_iterator(argv[i]))
      if (e.is_regular_file()) files.push_back(e.path());
    for (const auto& p : files) {
      std::ifstream f(p, std::ios::binary);
      const std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
      LLVMFuzzerTestOneInput(bytes.data(), bytes.size());
      ++n;
    }
  }
  std::printf("replayed %lld inputs\n", static_cast<long long>(n));
  return n > 0 ? 0 : 1;
}
