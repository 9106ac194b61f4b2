// The file-I/O layer (util/file_io.h): reads refuse directories and special files and stop at
// their cap; the atomic writer never replaces a non-regular file, never follows a planted
// symlink, never shares its temporary with another writer, and leaves nothing behind on failure.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <future>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "aquakv/util/error.h"
#include "aquakv/util/file_io.h"

namespace aquakv {
namespace {

namespace fs = std::filesystem;

class FileIo : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("aquakv_file_io_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    saved_ = read_limits();
  }
  void TearDown() override {
    read_limits() = saved_;
    fs::remove_all(dir_);
  }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  static std::string slurp(const std::string& p) {
    std::ifstream f(p, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  }
  // Names in the directory (to see that no temporary is left behind).
  std::vector<std::string> names() const {
    std::vector<std::string> v;
    for (const auto& e : fs::directory_iterator(dir_)) v.push_back(e.path().filename().string());
    std::sort(v.begin(), v.end());
    return v;
  }
  fs::path dir_;
  ReadLimits saved_;
};

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

#define EXPECT_HAS(s, sub) EXPECT_NE(std::string(s).find(sub), std::string::npos) << (s)

TEST_F(FileIo, ReadsRegularFilesWhole) {
  const std::string p = path("a.txt");
  std::ofstream(p, std::ios::binary) << std::string("abc\0def", 7);
  EXPECT_EQ(read_file(p, "-f", ReadKind::kText), std::string("abc\0def", 7));
  EXPECT_EQ(read_file(p, "adapters", ReadKind::kData), std::string("abc\0def", 7));
  uint64_t size = 0;
  EXPECT_EQ(read_file_head(p, "model", 2, &size), "ab");
  EXPECT_EQ(size, 7u);
}

TEST_F(FileIo, RefusesDirectoriesNamingThePath) {
  const std::string e = error_of([&] { read_file(dir_.string(), "-f", ReadKind::kText); });
  EXPECT_HAS(e, "-f " + dir_.string() + ": is a directory");
  EXPECT_HAS(error_of([&] { read_file(dir_.string(), "adapters", ReadKind::kData); }), "is a directory");
  MappedFile m;
  EXPECT_HAS(error_of([&] { m.open(dir_.string(), ""); }), "is a directory");
  EXPECT_HAS(error_of([&] { read_file(path("missing"), "x", ReadKind::kText); }), "cannot open");
}

TEST_F(FileIo, FifoIsAStreamForTextsOnly) {
  const std::string p = path("fifo");
  ASSERT_EQ(mkfifo(p.c_str(), 0600), 0);
  // Data files must be regular files: refused without blocking on the FIFO.
  EXPECT_HAS(error_of([&] { read_file(p, "adapters", ReadKind::kData); }), "is a FIFO");
  // A text may come through a FIFO: read until the writer closes it.
  std::thread writer([&] { std::ofstream(p, std::ios::binary) << "streamed text"; });
  EXPECT_EQ(read_file(p, "-f", ReadKind::kText), "streamed text");
  writer.join();
}

TEST_F(FileIo, FifoWriterThatFinishesBeforeTheReadIsNotLost) {
  // The race a reader must survive: a writer connects while the reader's open exists, writes
  // everything and closes before the reader starts waiting. Made deterministic here: the test
  // holds a read end of its own, so the writer can finish before read_file begins; the data
  // stays in the pipe. The text must arrive, and read_file must not wait for another writer.
  const std::string p = path("fifo2");
  ASSERT_EQ(mkfifo(p.c_str(), 0600), 0);
  const int keep = ::open(p.c_str(), O_RDONLY | O_NONBLOCK);
  ASSERT_GE(keep, 0);
  const int w = ::open(p.c_str(), O_WRONLY | O_NONBLOCK);
  ASSERT_GE(w, 0);
  ASSERT_EQ(::write(w, "quick", 5), 5);
  ::close(w);
  auto got = std::async(std::launch::async, [&] { return read_file(p, "-f", ReadKind::kText); });
  const bool done = got.wait_for(std::chrono::seconds(10)) == std::future_status::ready;
  if (!done) {  // unblock the stuck reader (a writer that opens and closes), then fail
    ::close(::open(p.c_str(), O_WRONLY));
    got.wait();
  }
  ::close(keep);
  ASSERT_TRUE(done) << "read_file still waiting 10 s after the writer closed";
  EXPECT_EQ(got.get(), "quick");
}

TEST_F(FileIo, EndlessStreamStopsAtTheCap) {
  // /dev/zero never ends: the read must stop at the cap with an error, promptly.
  read_limits().text_bytes = int64_t(4) << 20;
  const auto t0 = std::chrono::steady_clock::now();
  const std::string e = error_of([] { read_file("/dev/zero", "-f", ReadKind::kText); });
  EXPECT_HAS(e, "-f /dev/zero: larger than the 4 MiB limit");
  EXPECT_HAS(e, "--max-text-mb");
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 5.0);
  // A device is never a data file.
  EXPECT_HAS(error_of([] { read_file("/dev/zero", "adapters", ReadKind::kData); }),
             "is a character device");
}

TEST_F(FileIo, RegularFileOverTheCapIsRefusedBeforeReading) {
  const std::string p = path("big");
  std::ofstream(p, std::ios::binary) << std::string(3 << 20, 'x');
  read_limits().data_bytes = int64_t(2) << 20;
  EXPECT_HAS(error_of([&] { read_file(p, "logits file", ReadKind::kData); }), "--max-data-mb");
  read_limits().data_bytes = int64_t(4) << 20;
  EXPECT_EQ(read_file(p, "logits file", ReadKind::kData).size(), size_t(3 << 20));
}

TEST_F(FileIo, WritesAtomicallyAndReplacesRegularFiles) {
  const std::string p = path("out.json");
  write_file_atomic(p, "first", "--json");
  EXPECT_EQ(slurp(p), "first");
  write_file_atomic(p, "second, longer", "--json");
  EXPECT_EQ(slurp(p), "second, longer");
  EXPECT_EQ(names(), std::vector<std::string>{"out.json"});  // no temporary left
}

TEST_F(FileIo, NeverReplacesSpecialFiles) {
  // Finding 1: a device node (or any non-regular file) at the output path stays what it is.
  const std::string fifo = path("fifo");
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  EXPECT_HAS(error_of([&] { write_file_atomic(fifo, "x", "--json"); }), "is a FIFO; refusing to replace it");
  struct stat st {};
  ASSERT_EQ(lstat(fifo.c_str(), &st), 0);
  EXPECT_TRUE(S_ISFIFO(st.st_mode));
  // A character device made here (needs root), never a system one: a broken writer must not
  // be able to replace the machine's /dev/null. Without root the FIFO case stands in.
  const std::string dev = path("null");
  if (mknod(dev.c_str(), S_IFCHR | 0666, makedev(1, 3)) == 0) {
    EXPECT_HAS(error_of([&] { write_file_atomic(dev, "x", "--json"); }), "is a character device");
    ASSERT_EQ(lstat(dev.c_str(), &st), 0);
    EXPECT_TRUE(S_ISCHR(st.st_mode));
  }
  // A directory and a symlink are not replaced either.
  fs::create_directory(path("d"));
  EXPECT_HAS(error_of([&] { write_file_atomic(path("d"), "x", "-o"); }), "is a directory");
  const std::string victim = path("victim");
  std::ofstream(victim) << "precious";
  fs::create_symlink(victim, path("link"));
  EXPECT_HAS(error_of([&] { write_file_atomic(path("link"), "x", "-o"); }), "is a symbolic link");
  EXPECT_EQ(slurp(victim), "precious");
  for (const auto& n : names()) EXPECT_EQ(n.find(".tmp"), std::string::npos) << n;
}

TEST_F(FileIo, PlantedTemporarySymlinkIsNotFollowed) {
  // Finding 2: the old writers wrote PATH.tmp; a symlink planted there redirected the write.
  const std::string p = path("logits.bin");
  const std::string victim = path("victim");
  std::ofstream(victim) << "precious";
  fs::create_symlink(victim, p + ".tmp");
  write_file_atomic(p, "new contents", "--save-logits");
  EXPECT_EQ(slurp(victim), "precious");
  EXPECT_EQ(slurp(p), "new contents");
  EXPECT_FALSE(fs::is_symlink(p));
}

TEST_F(FileIo, ConcurrentWritersDoNotShareATemporary) {
  // Finding 2: two writers to one path. Each result is one writer's complete file.
  const std::string p = path("shared.json");
  const std::string a(1 << 20, 'a'), b(1 << 19, 'b');
  std::atomic<int> errors{0};
  auto writer = [&](const std::string& text) {
    for (int i = 0; i < 40; ++i) {
      try {
        write_file_atomic(p, text, "--json");
      } catch (const Error&) {
        ++errors;  // a shared temporary renamed away by the other writer
      }
    }
  };
  std::thread ta(writer, a), tb(writer, b);
  for (int i = 0; i < 60; ++i) {
    const std::string now = slurp(p);
    if (!now.empty()) {
      EXPECT_TRUE(now == a || now == b) << now.size();
    }
  }
  ta.join();
  tb.join();
  EXPECT_EQ(errors.load(), 0);
  const std::string last = slurp(p);
  EXPECT_TRUE(last == a || last == b);
  EXPECT_EQ(names(), std::vector<std::string>{"shared.json"});
}

TEST_F(FileIo, AnInterruptedWriteLeavesNoTemporary) {
  // A child process saves a 64 MiB file again and again; SIGINT arrives in the middle of one
  // of the writes. With the tool's handlers installed, the temporary is removed and the child
  // dies of SIGINT: the directory holds nothing or one complete file, never a ".NAME.*.tmp".
  const std::string p = path("big.bin");
  int go[2];
  ASSERT_EQ(::pipe(go), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    remove_partial_writes_on_signals();
    const std::string big(size_t(64) << 20, 'x');
    (void)::write(go[1], "g", 1);
    for (int i = 0; i < 1000; ++i) write_file_atomic(p, big, "test");
    ::_exit(3);  // not reached: the signal comes first
  }
  char c;
  ASSERT_EQ(::read(go[0], &c, 1), 1);
  std::this_thread::sleep_for(std::chrono::milliseconds(150));
  ::kill(child, SIGINT);
  int st = 0;
  ::waitpid(child, &st, 0);
  ::close(go[0]);
  ::close(go[1]);
  ASSERT_TRUE(WIFSIGNALED(st)) << st;
  EXPECT_EQ(WTERMSIG(st), SIGINT);
  for (const std::string& n : names()) {
    EXPECT_EQ(n, "big.bin");  // no temporary
    EXPECT_EQ(fs::file_size(p), size_t(64) << 20);
  }
}

TEST_F(FileIo, OutputPathIsCheckedBeforeWork) {
  const std::string e = error_of([&] { check_output_path(path("missing/x.aqkv"), "-o"); });
  EXPECT_HAS(e, "-o " + path("missing/x.aqkv") + ": directory " + path("missing") + " does not exist");
  EXPECT_HAS(error_of([] { check_output_path("", "--save-logits"); }), "--save-logits: empty file name");
  EXPECT_HAS(error_of([&] { check_output_path(dir_.string() + "/", "-o"); }), "names a directory");
  check_output_path(path("fine.json"), "--json");  // absent in an existing directory: fine
  if (geteuid() != 0) {  // root may write anywhere
    fs::create_directory(path("ro"));
    fs::permissions(path("ro"), fs::perms::owner_read | fs::perms::owner_exec);
    EXPECT_HAS(error_of([&] { write_file_atomic(path("ro/x"), "x", "-o"); }), "cannot create files in directory");
    fs::permissions(path("ro"), fs::perms::owner_all);
  }
}

}  // namespace
}  // namespace aquakv
