// The generation loop (generation.h).
#include "generation.h"

#include <cerrno>
#include <chrono>
#include <cstring>

#include "aquakv/util/error.h"

namespace aquakv::cli {

GenerationResult generate_tokens(Forward& fwd, const Tokenizer& tok, KvCache& cache, std::span<const int32_t> prompt,
                                 Sampler& sampler, int64_t n_predict, int64_t n_ctx, std::FILE* out,
                                 PromptStart start) {
  using clock = std::chrono::steady_clock;
  GenerationResult r;
  const int64_t n_vocab = fwd.model().config().n_vocab;
  const int seq = start.seq >= 0 ? start.seq : cache.add_sequence();
  r.seq = seq;
  const int64_t n_cached = start.n_cached;
  if (n_cached < 0 || n_cached > int64_t(prompt.size()) || cache.n_tokens(seq) != n_cached)
    fail("generation: the sequence holds {} tokens, {} of the prompt's {} expected", cache.n_tokens(seq),
         n_cached, prompt.size());
  std::vector<float> logits(static_cast<size_t>(n_vocab));
  const auto t0 = clock::now();
  if (n_cached == int64_t(prompt.size())) {
    if (int64_t(start.logits.size()) != n_vocab) fail("generation: the whole prompt is cached but its logits are not");
    logits = start.logits;
  } else {
    r.n_prompt = int64_t(prompt.size()) - n_cached;
    fwd.eval(cache, seq, prompt.subspan(size_t(n_cached)), logits.data(), false);
  }
  r.t_prefill = std::chrono::duration<double>(clock::now() - t0).count();
  if (start.after_prompt) start.after_prompt(seq, logits);

  std::string pending;  // bytes that may end inside a UTF-8 sequence
  const auto t1 = clock::now();
  while (int64_t(r.tokens.size()) < n_predict) {
    const int32_t next = sampler.sample(logits);
    r.tokens.push_back(next);
    if (tok.is_eog(next)) break;
    pending += tok.piece(next);
    const size_t ok = utf8_complete_prefix(pending);
    std::fwrite(pending.data(), 1, ok, out);
    std::fflush(out);
    // A full disk or closed pipe stops the generation now instead of after n_predict tokens.
    if (std::ferror(out)) fail("cannot write the generated text: {}", std::strerror(errno));
    pending.erase(0, ok);
    if (cache.n_tokens(seq) >= n_ctx) {
      std::fprintf(stderr, "\naquakv: context full (%lld tokens), stopping\n", (long long)n_ctx);
      break;
    }
    fwd.eval(cache, seq, std::span<const int32_t>(&next, 1), logits.data(), false);
  }
  std::fwrite(pending.data(), 1, pending.size(), out);
  std::fputs("\n", out);
  std::fflush(out);
  // Decode time covers one forward pass per generated token (the last one too, unless it ended
  // generation) plus sampling; tokens/s counts the tokens produced.
  r.t_decode = std::chrono::duration<double>(clock::now() - t1).count();
  r.logits = logits;
  r.live_bytes = cache.live_bytes();
  r.fixed_bytes = cache.fixed_bytes();
  r.cache_tokens = cache.n_tokens(seq);
  for (const auto& t : cache.bits_report(seq)) r.bits_per_value += t.bits_per_value;
  return r;
}

}  // namespace aquakv::cli
