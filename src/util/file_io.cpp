// The file-I/O layer (util/file_io.h): bounded reads, mappings, the atomic writer.
#include "aquakv/util/file_io.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cerrno>
#include <cstring>
#include <utility>

#include "aquakv/util/error.h"

namespace aquakv {
namespace {

std::string label(const std::string& what, const std::string& path) {
  return what.empty() ? path : what + " " + path;
}

const char* type_name(mode_t m) {
  if (S_ISDIR(m)) return "a directory";
  if (S_ISCHR(m)) return "a character device";
  if (S_ISBLK(m)) return "a block device";
  if (S_ISFIFO(m)) return "a FIFO";
  if (S_ISSOCK(m)) return "a socket";
  if (S_ISLNK(m)) return "a symbolic link";
  return "a special file";
}

// Closes the descriptor on every path out of a function.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

bool is_stream(mode_t m) { return S_ISFIFO(m) || S_ISCHR(m) || S_ISSOCK(m); }

// Opens for reading without blocking on a FIFO, then checks the file type. A stream accepted
// as input is read in blocking mode; a FIFO first waits for its writer's data (or hang-up).
int open_for_read(const std::string& path, const std::string& what, bool allow_stream,
                  struct stat& st) {
  const std::string l = label(what, path);
  if (path.empty()) fail("{}: empty file name", what.empty() ? std::string("input") : what);
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) fail("{}: cannot open: {}", l, std::strerror(errno));
  Fd guard(fd);
  if (::fstat(fd, &st) != 0) fail("{}: cannot stat: {}", l, std::strerror(errno));
  if (S_ISREG(st.st_mode)) {
    if (::fcntl(fd, F_SETFL, 0) != 0) fail("{}: cannot read: {}", l, std::strerror(errno));
    return guard.release();
  }
  if (!allow_stream || !is_stream(st.st_mode))
    fail("{}: is {}, expected a regular file", l, type_name(st.st_mode));
  if (S_ISFIFO(st.st_mode)) {
    // Wait on the descriptor already open (never a second open: a writer that connected, wrote
    // and closed in between would leave a blocking reopen waiting for ever). A FIFO reader with
    // no writer reads end of file, so first wait until data arrives or a writer that came after
    // this open has gone (POLLHUP), then read in blocking mode.
    for (;;) {
      struct pollfd pfd {fd, POLLIN, 0};
      const int r = ::poll(&pfd, 1, -1);
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) fail("{}: cannot wait for data: {}", l, std::strerror(errno));
      if (pfd.revents & (POLLIN | POLLHUP | POLLERR)) break;
    }
  }
  if (::fcntl(fd, F_SETFL, 0) != 0) fail("{}: cannot read: {}", l, std::strerror(errno));
  return guard.release();
}

// Reads until end of file or until more than `cap` bytes arrived (then Error).
std::string read_capped(int fd, const std::string& l, int64_t cap, const char* cap_flag,
                        int64_t size_hint) {
  std::string out;
  if (size_hint > 0 && size_hint <= cap) out.reserve(size_t(size_hint));
  char buf[1 << 16];
  for (;;) {
    const ssize_t k = ::read(fd, buf, sizeof buf);
    if (k < 0) {
      if (errno == EINTR) continue;
      fail("{}: cannot read: {}", l, std::strerror(errno));
    }
    if (k == 0) break;
    if (int64_t(out.size()) + k > cap)
      fail("{}: larger than the {} MiB limit for this input (raise it with {})", l, cap >> 20,
           cap_flag);
    out.append(buf, size_t(k));
  }
  return out;
}

std::string dir_of(const std::string& path) {
  const size_t s = path.rfind('/');
  if (s == std::string::npos) return ".";
  if (s == 0) return "/";
  return path.substr(0, s);
}

std::string base_of(const std::string& path) {
  const size_t s = path.rfind('/');
  return s == std::string::npos ? path : path.substr(s + 1);
}

// Absent, or a regular file (lstat: a symlink counts as "not a regular file").
void check_target(const std::string& path, const std::string& l) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return;
    fail("{}: cannot stat: {}", l, std::strerror(errno));
  }
  if (!S_ISREG(st.st_mode))
    fail("{}: is {}; refusing to replace it (give the name of a regular file)", l,
         type_name(st.st_mode));
}

std::string random_suffix() {
  uint8_t r[8];
  size_t got = 0;
  while (got < sizeof r) {
    const ssize_t k = ::getrandom(r + got, sizeof r - got, 0);
    if (k < 0) {
      if (errno == EINTR) continue;
      fail("cannot get random bytes for a temporary file name: {}", std::strerror(errno));
    }
    got += size_t(k);
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string s;
  for (uint8_t b : r) s += kHex[b >> 4], s += kHex[b & 15];
  return s;
}

void write_all(int fd, std::string_view bytes, const std::string& l, const std::string& tmp) {
  size_t off = 0;
  while (off < bytes.size()) {
    const ssize_t k = ::write(fd, bytes.data() + off, bytes.size() - off);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) {
      const int e = k < 0 ? errno : EIO;
      ::unlink(tmp.c_str());
      fail("{}: write failed: {}", l, std::strerror(e));
    }
    off += size_t(k);
  }
}

// The temporary file a write_file_atomic call is filling, for the signal handler below (one
// writer at a time: writes come from the main thread). A plain char array: the handler may
// only read memory and call async-signal-safe functions (unlink, signal, raise).
char g_tmp_path[4096];
volatile std::sig_atomic_t g_tmp_set = 0;

void remove_tmp_and_die(int sig) {
  if (g_tmp_set) ::unlink(g_tmp_path);
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}

void track_tmp(const std::string& tmp) {
  g_tmp_set = 0;
  if (tmp.size() < sizeof(g_tmp_path)) {
    std::memcpy(g_tmp_path, tmp.c_str(), tmp.size() + 1);
    g_tmp_set = 1;
  }
}

}  // namespace

void remove_partial_writes_on_signals() {
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT}) std::signal(sig, remove_tmp_and_die);
}

ReadLimits& read_limits() {
  static ReadLimits limits;
  return limits;
}

std::string read_file(const std::string& path, const std::string& what, ReadKind kind) {
  const bool text = kind == ReadKind::kText;
  struct stat st {};
  Fd fd(open_for_read(path, what, text, st));
  const int64_t cap = text ? read_limits().text_bytes : read_limits().data_bytes;
  const char* flag = text ? "--max-text-mb" : "--max-data-mb";
  const std::string l = label(what, path);
  if (S_ISREG(st.st_mode) && st.st_size > cap)
    fail("{}: {} bytes, larger than the {} MiB limit for this input (raise it with {})", l,
         int64_t(st.st_size), cap >> 20, flag);
  return read_capped(fd.get(), l, cap, flag, S_ISREG(st.st_mode) ? int64_t(st.st_size) : 0);
}

std::string read_file_head(const std::string& path, const std::string& what, int64_t n,
                           uint64_t* size) {
  struct stat st {};
  Fd fd(open_for_read(path, what, false, st));
  *size = uint64_t(st.st_size);
  const std::string l = label(what, path);
  std::string out(size_t(std::min<int64_t>(n, st.st_size)), '\0');
  size_t off = 0;
  while (off < out.size()) {
    const ssize_t k = ::read(fd.get(), out.data() + off, out.size() - off);
    if (k < 0 && errno == EINTR) continue;
    if (k < 0) fail("{}: cannot read: {}", l, std::strerror(errno));
    if (k == 0) fail("{}: file shrank while being read", l);
    off += size_t(k);
  }
  return out;
}

MappedFile::~MappedFile() {
  if (map_ != nullptr) ::munmap(map_, size_t(len_));
}

void MappedFile::release(const uint8_t* p, uint64_t n) const {
  const uint8_t* base = data();
  if (base == nullptr || p < base || n > len_ || uint64_t(p - base) > len_ - n) return;
  const uint64_t page = uint64_t(::sysconf(_SC_PAGESIZE));
  const uint64_t lo = (uint64_t(p - base) + page - 1) / page * page;
  const uint64_t hi = (uint64_t(p - base) + n) / page * page;
  // A read-only private mapping never written: MADV_DONTNEED only drops clean file pages.
  if (hi > lo) ::madvise(const_cast<uint8_t*>(base) + lo, size_t(hi - lo), MADV_DONTNEED);
}

void MappedFile::open(const std::string& path, const std::string& what) {
  struct stat st {};
  Fd fd(open_for_read(path, what, false, st));
  const std::string l = label(what, path);
  if (st.st_size == 0) fail("{}: the file is empty", l);
  void* p = ::mmap(nullptr, size_t(st.st_size), PROT_READ, MAP_PRIVATE, fd.get(), 0);
  if (p == MAP_FAILED) fail("{}: cannot map {} bytes: {}", l, int64_t(st.st_size), std::strerror(errno));
  if (map_ != nullptr) ::munmap(map_, size_t(len_));
  map_ = p;
  len_ = uint64_t(st.st_size);
}

void check_output_path(const std::string& path, const std::string& what) {
  const std::string l = label(what, path);
  if (path.empty()) fail("{}: empty file name", what.empty() ? std::string("output") : what);
  if (path.back() == '/') fail("{}: names a directory, expected a file name", l);
  check_target(path, l);
  const std::string dir = dir_of(path);
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0)
    fail("{}: directory {} does not exist or cannot be reached: {}", l, dir, std::strerror(errno));
  if (!S_ISDIR(st.st_mode)) fail("{}: {} is not a directory", l, dir);
  if (::access(dir.c_str(), W_OK | X_OK) != 0)
    fail("{}: cannot create files in directory {}: {}", l, dir, std::strerror(errno));
}

void write_file_atomic(const std::string& path, std::string_view bytes, const std::string& what) {
  write_file_atomic(path, std::span<const std::string_view>(&bytes, 1), what);
}

void write_file_atomic(const std::string& path, std::span<const std::string_view> pieces,
                       const std::string& what) {
  const std::string l = label(what, path);
  check_output_path(path, what);
  // ".NAME.RANDOM.tmp" in the same directory (rename is atomic only within a file system);
  // NAME is shortened so the whole name stays under NAME_MAX (255).
  const std::string dir = dir_of(path);
  std::string tmp;
  int fd = -1;
  for (int attempt = 0; fd < 0; ++attempt) {
    tmp = dir + "/." + base_of(path).substr(0, 200) + "." + random_suffix() + ".tmp";
    track_tmp(tmp);  // before it exists: a signal from here on removes it
    fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666);
    if (fd < 0 && (errno != EEXIST || attempt >= 16))
      fail("{}: cannot create a temporary file in {}: {}", l, dir, std::strerror(errno));
  }
  {
    Fd guard(fd);
    for (const std::string_view piece : pieces) write_all(fd, piece, l, tmp);
    if (::fsync(fd) != 0) {
      const int e = errno;
      ::unlink(tmp.c_str());
      fail("{}: cannot flush to disk: {}", l, std::strerror(e));
    }
    if (::close(guard.release()) != 0) {
      const int e = errno;
      ::unlink(tmp.c_str());
      fail("{}: write failed: {}", l, std::strerror(e));
    }
  }
  try {
    check_target(path, l);  // again: something may have appeared at the path meanwhile
  } catch (const Error&) {
    ::unlink(tmp.c_str());
    throw;
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    ::unlink(tmp.c_str());
    g_tmp_set = 0;
    fail("{}: cannot move the new file into place: {}", l, std::strerror(e));
  }
  g_tmp_set = 0;  // (a signal between the rename and here unlinks a name that is gone: harmless)
  // Make the rename itself durable (best effort: some file systems refuse fsync on a directory).
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    (void)::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace aquakv
