// `aquakv tokenize`: prints the token ids of a text with a model's tokenizer, like llama.cpp's
// llama-tokenize: one "id -> 'piece'" line per token, or with --ids a single "[id, id, ...]".
// The text must be valid UTF-8 (an error names the first bad byte); a file that cannot be read
// is an error too (eval::read_text_file: bounded, regular files or streams).
#include <chrono>
#include <cstdio>
#include <string>

#include "aquakv/engine/gguf.h"
#include "aquakv/eval/engine_runner.h"
#include "aquakv/engine/tokenizer.h"
#include "aquakv/util/error.h"
#include "command.h"

namespace aquakv::cli {
namespace {

struct Opts {
  std::string model, prompt, file;
  bool ids = false, no_bos = false, no_parse_special = false, show_count = false, timing = false;
};

int run(const Opts& o) {
  const std::string text = o.file.empty() ? o.prompt : eval::read_text_file(o.file, "-f");
  if (o.file.empty()) require_utf8(text, "-p");
  const auto file = GgufFile::open(o.model);
  const Tokenizer tok = Tokenizer::from_gguf(*file);
  const auto t0 = std::chrono::steady_clock::now();
  const std::vector<TokenId> ids = tok.encode(text, !o.no_bos, !o.no_parse_special);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  std::string out;
  if (o.ids) {
    out += '[';
    for (size_t i = 0; i < ids.size(); ++i) out += (i ? ", " : "") + std::to_string(ids[i]);
    out += "]\n";
  } else {
    for (TokenId id : ids) out += fmt::format("{:6d} -> '{}'\n", id, tok.piece(id, true));
  }
  if (o.show_count) out += fmt::format("Total number of tokens: {}\n", ids.size());
  std::fwrite(out.data(), 1, out.size(), stdout);
  if (o.timing) {
    std::fprintf(stderr, "encoded %zu bytes into %zu tokens in %.1f ms (%.2f MB/s)\n", text.size(),
                 ids.size(), secs * 1e3, text.size() / 1e6 / (secs > 0 ? secs : 1e-9));
  }
  return 0;
}

const CommandRegistrar reg{"tokenize", "print the token ids of a text", [](CLI::App& sub) {
  auto o = std::make_shared<Opts>();
  o->model = default_model_path();
  sub.add_option("-m,--model", o->model, "GGUF model file")->capture_default_str();
  auto* input = sub.add_option_group("input", "exactly one of -p / -f");
  input->add_option("-p,--prompt", o->prompt, "text to tokenize");
  input->add_option("-f,--file", o->file, "file whose contents to tokenize");
  input->require_option(1);
  sub.add_flag("--ids", o->ids, "print only the ids, as [id, id, ...]");
  sub.add_flag("--no-bos", o->no_bos, "do not add BOS/EOS even if the model asks for them");
  sub.add_flag("--no-parse-special", o->no_parse_special,
               "treat control-token texts such as <|im_start|> as plain text");
  sub.add_flag("--show-count", o->show_count, "print the number of tokens at the end");
  sub.add_flag("--timing", o->timing, "print the encoding time to stderr");
  return RunFn([o] { return run(*o); });
}};

}  // namespace
}  // namespace aquakv::cli
