// `aquakv generate`: prompt (or chat message) in, streamed text out, like llama.cpp's
// llama-cli/llama-simple. Ends with a timing line: prefill and decode tokens/s and the KV
// cache's live memory. With no prompt it answers a built-in chat message. `--kv aquakv` without
// a file uses the per-user self-calibrated adapters (self_adapters.h); `--compare [KV]` runs the
// prompt through a reference cache too and prints a table (generate_compare.h).
#include <malloc.h>

#include <cstdio>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "aquakv/engine/chat_template.h"
#include "aquakv/eval/engine_runner.h"
#include "aquakv/kv/cache_factory.h"
#include "aquakv/util/error.h"
#include "aquakv/util/file_io.h"
#include "aquakv/util/parallel.h"
#include "command.h"
#include "generate_compare.h"
#include "generation.h"
#include "prompt_cache.h"
#include "self_adapters.h"

namespace aquakv::cli {
namespace {

// Asks for a few hundred tokens, so that with the default -n 256 a compressed cache has
// compressed chunks to show (AQUA-KV keeps the 128 most recent tokens exact).
constexpr const char* kBuiltinPrompt =
    "Write a short essay, about 300 words, on what the key-value cache of a language model stores "
    "and why compressing it matters.";

struct Opts {
  std::string model, prompt, file, system, chat_template, kv = "fp16";
  std::string compare;         // reference cache of --compare ("" with no value: fp16)
  CLI::Option* compare_opt = nullptr;
  CLI::Option* prompt_opt = nullptr;
  SelfCalibration self_calib;  // --kv aquakv without a file
  std::string prompt_cache, cache_file_kv;  // --prompt-cache FILE, --cache-file-kv SPEC
  bool prompt_cache_all = false, prompt_cache_ro = false, cache_file_zstd = false;
  bool chat = false;
  int64_t n_predict = 256, n_ctx = 4096;
  int threads = 0;
  float temp = 0.8f, top_p = 0.95f, min_p = 0.05f;
  int top_k = 40;
  int64_t seed = -1;
};

std::vector<ChatMessage> with_system(const Opts& o, const std::string& text) {
  std::vector<ChatMessage> msgs;
  if (!o.system.empty()) msgs.push_back({"system", o.system});
  msgs.push_back({"user", text});
  return msgs;
}

// The prompt text: the user's (or the built-in) message, through the chat template when asked.
// `user` is the -p text or the -f file's contents (read before the model loads).
std::string prompt_text(const Opts& o, const std::string& user, const Model& model, bool& chat) {
  std::string text = user;
  chat = o.chat || (o.prompt.empty() && o.file.empty());
  if (o.prompt.empty() && o.file.empty()) text = kBuiltinPrompt;
  if (!chat) return text;
  ChatFormat fmt;
  if (!o.chat_template.empty()) {
    fmt = chat_format_from_name(o.chat_template);
  } else {
    const auto src = model.gguf().get_string_opt("tokenizer.chat_template");
    const std::string& arch = model.config().arch;
    if (!src && chat_format_for_arch(arch)) {
      fmt = *chat_format_for_arch(arch);
      std::fprintf(stderr, "aquakv: the model has no tokenizer.chat_template; using the %s format of architecture %s\n",
                   chat_format_name(fmt), arch.c_str());
      return render_chat(fmt, with_system(o, text), true);
    }
    if (!src) fail("{}: the model has no tokenizer.chat_template; pass --chat-template chatml (or llama3, ...)", model.path());
    const auto d = detect_chat_format(*src);
    if (!d) fail("{}: tokenizer.chat_template is not a template aquakv recognizes; pass --chat-template NAME", model.path());
    fmt = *d;
  }
  return render_chat(fmt, with_system(o, text), true);
}

SessionSaveOptions save_opts(const Opts& o) {
  SessionSaveOptions s;
  s.zstd = o.cache_file_zstd;
  return s;
}

double bits_per_value(uint64_t bytes, int64_t tokens, const KvShape& shape) {
  return session_bits_per_value(bytes, tokens, shape.n_layers, shape.width());
}

void report_restore(const std::string& path, const PromptCacheRestore& r, size_t n_prompt, const KvCache& cache) {
  if (r.file_tokens == 0) {
    std::fprintf(stderr, "aquakv: prompt cache %s: none yet; the whole prompt (%zu tokens) is processed\n", path.c_str(), n_prompt);
    return;
  }
  std::fprintf(stderr,
               "aquakv: prompt cache %s: reused %lld of %zu prompt tokens in %.3f s (file: %lld tokens, %.2f MiB, "
               "%.2f bits/value, stored as %s%s%s)\n",
               path.c_str(), (long long)r.n_reused, n_prompt, r.seconds, (long long)r.file_tokens,
               double(r.file_bytes) / 1048576.0, bits_per_value(r.file_bytes, r.file_tokens, cache.shape()),
               r.file_format.c_str(), r.moved ? ", moved into " : "", r.moved ? cache.name().c_str() : "");
}

void report_save(const std::string& path, const PromptCacheSave& s, const KvCache& cache) {
  std::fprintf(stderr, "aquakv: prompt cache %s: saved %lld tokens in %.3f s: %.2f MiB, %.2f bits/value%s\n",
               path.c_str(), (long long)s.tokens, s.seconds, double(s.stats.file_bytes) / 1048576.0,
               bits_per_value(s.stats.file_bytes, s.tokens, cache.shape()),
               s.stats.stored_section_bytes < s.stats.raw_section_bytes ? " (zstd)" : "");
}

int run(const Opts& o) {
  if (o.n_predict < 0) fail("-n: expected a number of tokens >= 0, got {}", o.n_predict);
  if (o.n_ctx < 0) fail("-c: expected a context size >= 0, got {}", o.n_ctx);
  if (o.threads < 0) fail("-t: expected a thread count >= 0, got {}", o.threads);
  if (o.prompt_opt->count() > 0 && !o.file.empty()) fail("-p and -f: give one prompt, not both");
  if (o.prompt_opt->count() > 0 && o.prompt.empty())
    fail("-p: the prompt is empty (leave -p out for the built-in message)");
  require_utf8(o.prompt, "-p");
  require_utf8(o.system, "--system");
  SamplerParams sp;
  sp.temperature = o.temp;
  sp.top_k = o.top_k;
  sp.top_p = o.top_p;
  sp.min_p = o.min_p;
  sp.seed = o.seed >= 0 ? uint64_t(o.seed) : std::random_device{}();
  Sampler sampler(sp);  // validates the sampling flags before the model loads
  const bool pc = !o.prompt_cache.empty();
  if (!pc && (o.prompt_cache_all || o.prompt_cache_ro || !o.cache_file_kv.empty() || o.cache_file_zstd))
    fail("--prompt-cache-all, --prompt-cache-ro, --cache-file-kv and --cache-file-zstd need --prompt-cache FILE");
  if (pc && o.compare_opt->count() > 0) fail("--prompt-cache and --compare: use one at a time");
  if (o.prompt_cache_all && o.prompt_cache_ro) fail("--prompt-cache-all and --prompt-cache-ro contradict each other");
  if (pc && !o.prompt_cache_ro) check_output_path(o.prompt_cache, "--prompt-cache");
  const std::string user = o.file.empty() ? o.prompt : eval::read_text_file(o.file, "-f");
  if (!o.file.empty() && user.empty()) fail("-f {}: the prompt file is empty", o.file);

  const auto model = Model::load(o.model);
  const ModelConfig& cfg = model->config();
  const Tokenizer tok = Tokenizer::from_gguf(model->gguf());
  malloc_trim(0);  // the vocabulary copies the tokenizer was built from go back to the system
  int64_t n_ctx = o.n_ctx == 0 ? cfg.n_ctx_train : o.n_ctx;
  if (n_ctx > cfg.n_ctx_train) {
    std::fprintf(stderr, "aquakv: warning: -c %lld exceeds the model's training context %lld\n",
                 (long long)n_ctx, (long long)cfg.n_ctx_train);
  }
  bool chat = false;
  const std::string text = prompt_text(o, user, *model, chat);
  const std::vector<TokenId> ids = tok.encode(text, true, true);
  if (ids.empty()) fail("the prompt is empty");
  if (int64_t(ids.size()) >= n_ctx) {
    fail("the prompt is {} tokens, the context (-c) holds {}; it must leave room to generate",
         ids.size(), n_ctx);
  }
  const int threads = o.threads > 0 ? o.threads : 0;
  Forward fwd(*model, threads);
  SelfCalibration sc = o.self_calib;
  sc.threads = threads;
  const std::string spec = resolve_kv_spec(o.kv, *model, sc);
  if (o.compare_opt != nullptr && o.compare_opt->count() > 0) {
    const std::string ref = o.compare.empty() ? "fp16" : o.compare;
    return compare_generation(fwd, tok, ids, chat ? "" : text, sp, o.n_predict, n_ctx,
                              {ref, resolve_kv_spec(ref, *model, sc)}, {o.kv, spec});
  }
  auto cache = make_cache(spec, model->kv_shape(n_ctx));
  const std::string file_spec = o.cache_file_kv.empty() ? "" : resolve_kv_spec(o.cache_file_kv, *model, sc);
  if (!file_spec.empty()) make_cache(file_spec, cache->shape());  // refuse a bad spec before any work
  PromptStart start;
  start.seq = cache->add_sequence();
  std::optional<PromptCacheSave> saved;  // reported at the end, after the generated text
  if (pc) {
    const PromptCacheRestore rs = restore_prompt_cache(o.prompt_cache, *cache, start.seq, ids);
    start.n_cached = rs.n_reused;
    start.logits = rs.logits;
    report_restore(o.prompt_cache, rs, ids.size(), *cache);
    const bool whole = rs.n_reused == int64_t(ids.size());
    if (!o.prompt_cache_ro && !o.prompt_cache_all && !whole) {
      start.after_prompt = [&](int seq, std::span<const float> logits) {
        saved = save_prompt_cache(o.prompt_cache, *cache, seq, ids, logits, file_spec, save_opts(o));
      };
    }
  }
  if (!chat) std::fwrite(text.data(), 1, text.size(), stdout);  // all of it, NULs included
  std::fflush(stdout);
  const GenerationResult r = generate_tokens(fwd, tok, *cache, ids, sampler, o.n_predict, n_ctx, stdout, start);
  if (pc && o.prompt_cache_all) {
    // Everything the cache holds: the prompt and the generated tokens that were processed (an
    // end-of-generation token is sampled but never processed).
    std::vector<int32_t> all(ids.begin(), ids.end());
    all.insert(all.end(), r.tokens.begin(), r.tokens.end());
    all.resize(size_t(cache->n_tokens(r.seq)));
    saved = save_prompt_cache(o.prompt_cache, *cache, r.seq, all, r.logits, file_spec, save_opts(o));
  }
  if (saved) report_save(o.prompt_cache, *saved, *cache);
  std::fprintf(stderr,
               "\nprefill: %lld tokens in %.3f s (%.1f tok/s)%s | decode: %lld tokens in %.3f s "
               "(%.1f tok/s) | KV cache %s: %.2f MiB live (%lld tokens) | threads %d, seed %llu\n",
               (long long)r.n_prompt, r.t_prefill, r.prefill_tps(),
               start.n_cached > 0 ? fmt::format(" + {} from the prompt cache", start.n_cached).c_str() : "", (long long)r.tokens.size(), r.t_decode, r.decode_tps(),
               cache->name().c_str(), double(r.live_bytes) / (1024.0 * 1024.0), (long long)r.cache_tokens,
               num_threads(), (unsigned long long)sp.seed);
  return 0;
}

const CommandRegistrar reg{"generate", "generate text from a prompt or a chat message", [](CLI::App& sub) {
  auto o = std::make_shared<Opts>();
  o->model = default_model_path();
  sub.add_option("-m,--model", o->model, "GGUF model file")->capture_default_str();
  o->prompt_opt = sub.add_option("-p,--prompt", o->prompt, "prompt text (default: a built-in chat message)");
  sub.add_option("-f,--file", o->file, "read the prompt from a file");
  sub.add_flag("--chat", o->chat, "wrap the prompt as a user message in the model's chat template");
  sub.add_option("--chat-template", o->chat_template,
                 "chat format instead of the model's: chatml, llama3, llama2, mistral, phi3, gemma, zephyr");
  sub.add_option("--system", o->system, "system message for --chat");
  sub.add_option("-n,--n-predict", o->n_predict, "tokens to generate")->capture_default_str();
  sub.add_option("-c,--ctx-size", o->n_ctx, "context size in tokens (0: the model's)")->capture_default_str();
  sub.add_option("-t,--threads", o->threads, "threads (default: all cores)");
  sub.add_option("--temp", o->temp, "temperature (0: greedy)")->capture_default_str();
  sub.add_option("--top-k", o->top_k, "top-k (0: off)")->capture_default_str();
  sub.add_option("--top-p", o->top_p, "top-p (1: off)")->capture_default_str();
  sub.add_option("--min-p", o->min_p, "min-p (0: off)")->capture_default_str();
  sub.add_option("-s,--seed", o->seed, "random seed (default: random)");
  sub.add_option("--kv", o->kv,
                 "KV cache format (fp16, f32, aquakv = self-calibrated AQUA-KV, aquakv:FILE, higgs2, q8_0, ...)")
      ->capture_default_str();
  o->compare_opt = sub.add_option("--compare", o->compare,
                                  "also run the prompt with this reference cache (default fp16), same sampling; "
                                  "print both outputs and a comparison table")
                       ->expected(0, 1);
  sub.add_option("--prompt-cache", o->prompt_cache,
                 "session file of the processed prompt: reuse the longest matching prefix, process the rest, "
                 "save after the prompt (docs/SESSIONS.md)");
  sub.add_flag("--prompt-cache-all", o->prompt_cache_all, "save the generated tokens too (at the end)");
  sub.add_flag("--prompt-cache-ro", o->prompt_cache_ro, "use the prompt cache but never write it");
  sub.add_option("--cache-file-kv", o->cache_file_kv,
                 "format the prompt cache is stored in (default: the --kv format), e.g. aquakv with --kv fp16");
  sub.add_flag("--cache-file-zstd", o->cache_file_zstd, "zstd-compress the stored sections where it saves >= 3%");
  add_self_adapter_flags(sub, o->self_calib);
  return RunFn([o] { return run(*o); });
}};

}  // namespace
}  // namespace aquakv::cli
