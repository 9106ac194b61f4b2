// The one file-I/O layer of aquakv: every file the library or the tool reads or writes goes
// through here (texts, adapters, logits files, grids, JSON and report files, models).
// Owns: opening for reading (regular files only, or a stream where a stream makes sense),
// bounded reads with documented size caps, read-only mappings (GGUF models), output-path checks
// and the one atomic writer. Not: file formats (each format's own module parses the bytes).
//
// Rules (docs/SECURITY.md):
// - Reading refuses directories and special files with one line naming the path; text inputs
//   (ReadKind::kText) may also be a FIFO, a character device or a pipe such as /dev/stdin, read
//   until end of file or the cap. Every read stops at a cap: text files 256 MiB, data files
//   (adapters, logits) 16 GiB by default; `aquakv --max-text-mb N --max-data-mb N` raises them.
// - Writing goes to a fresh temporary in the target's directory (random name, created with
//   O_CREAT|O_EXCL|O_NOFOLLOW, so it can neither follow a planted symlink nor be shared with
//   another writer), is fsync'd, and is renamed over the target. The target must be absent or a
//   regular file: a directory, device, FIFO, socket or symlink is never replaced. A failed write
//   removes the temporary and leaves the target as it was.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace aquakv {

struct ReadLimits {
  int64_t text_bytes = int64_t(256) << 20;  // texts, prompts, JSON/config/row files
  int64_t data_bytes = int64_t(16) << 30;   // binary data files read whole (adapters, logits)
};
// Process-wide caps; the tool sets them from its flags before any work.
ReadLimits& read_limits();

enum class ReadKind {
  kText,  // regular file or stream, capped at read_limits().text_bytes
  kData,  // regular file only, capped at read_limits().data_bytes
};

// Whole contents of `path`. Errors (aquakv::Error) read "WHAT PATH: problem" (or "PATH: problem"
// when `what` is empty): missing, unreadable, a directory or special file, larger than the cap.
std::string read_file(const std::string& path, const std::string& what, ReadKind kind);

// The first min(n, size) bytes of a regular file and its size in bytes.
std::string read_file_head(const std::string& path, const std::string& what, int64_t n,
                           uint64_t* size);

// A read-only, private mapping of a whole regular file (not capped: pages are loaded on use).
class MappedFile {
 public:
  MappedFile() = default;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();
  // Error for a missing/unreadable path, a directory or special file, or an empty file.
  void open(const std::string& path, const std::string& what);
  const uint8_t* data() const { return static_cast<const uint8_t*>(map_); }
  uint64_t size() const { return len_; }
  // Drops the resident pages lying wholly inside [p, p + n) of this mapping (the memory stays
  // mapped; a later read faults the page back from the file). For data copied elsewhere, e.g.
  // repacked weights, so that the process does not hold both. p outside the mapping: no-op.
  void release(const uint8_t* p, uint64_t n) const;

 private:
  void* map_ = nullptr;
  uint64_t len_ = 0;
};

// Checks, before any work, that write_file_atomic(path, ...) can succeed: the path is not empty,
// its directory exists and is writable, and the target is absent or a regular file.
void check_output_path(const std::string& path, const std::string& what);

// Installs handlers for SIGINT, SIGTERM, SIGHUP and SIGQUIT that remove the temporary file of a
// write in progress, then end the process as the signal would have: an interrupted save leaves
// neither a partial target (never: rename is atomic) nor its temporary. The tool calls it first.
void remove_partial_writes_on_signals();

// Atomically replaces (or creates) `path` with `bytes` (see the rules above); new files get
// mode 0666 minus the umask.
void write_file_atomic(const std::string& path, std::string_view bytes, const std::string& what);
// The same, with the file's bytes given as consecutive pieces (no concatenated copy).
void write_file_atomic(const std::string& path, std::span<const std::string_view> pieces,
                       const std::string& what);

}  // namespace aquakv
