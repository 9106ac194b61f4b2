// Chat template detection (by the markers llama.cpp's matcher uses) and rendering.
#include <gtest/gtest.h>

#include <cstdlib>

#include "aquakv/engine/chat_template.h"
#include "aquakv/engine/gguf.h"
#include "aquakv/util/error.h"

namespace aquakv {
namespace {

TEST(ChatTemplate, DetectsCommonTemplates) {
  EXPECT_EQ(detect_chat_format("{% for m in messages %}{{'<|im_start|>' + m['role']}}"), ChatFormat::kChatML);
  EXPECT_EQ(detect_chat_format("{{ '<|start_header_id|>' + role + '<|end_header_id|>' }}"), ChatFormat::kLlama3);
  EXPECT_EQ(detect_chat_format("{{ '<start_of_turn>' + role }}"), ChatFormat::kGemma);
  EXPECT_EQ(chat_format_for_arch("gemma3"), ChatFormat::kGemma);
  EXPECT_EQ(chat_format_for_arch("llama"), std::nullopt);
  EXPECT_EQ(detect_chat_format("{{'<|user|>' + c + '<|end|>'}}{{'<|assistant|>'}}"), ChatFormat::kPhi3);
  EXPECT_EQ(detect_chat_format("{{ '<|user|>\\n' + c + '</s>' }}"), ChatFormat::kZephyr);
  EXPECT_EQ(detect_chat_format("[INST] <<SYS>>"), ChatFormat::kLlama2);
  EXPECT_EQ(detect_chat_format("{{ '[INST] ' + c + ' [/INST]' }}"), ChatFormat::kMistral);
  EXPECT_FALSE(detect_chat_format("{{ messages | tojson }}").has_value());
}

TEST(ChatTemplate, RendersChatML) {
  const std::vector<ChatMessage> m = {{"system", "Be brief."}, {"user", "Hi"}};
  EXPECT_EQ(render_chat(ChatFormat::kChatML, m, true),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(render_chat(ChatFormat::kLlama3, {{"user", "Hi"}}, true),
            "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
  EXPECT_EQ(render_chat(ChatFormat::kGemma, m, true),
            "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n");
  EXPECT_EQ(render_chat(ChatFormat::kLlama2, m, true), "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST]");
}

TEST(ChatTemplate, NamesAndErrors) {
  EXPECT_EQ(chat_format_from_name("chatml"), ChatFormat::kChatML);
  EXPECT_STREQ(chat_format_name(ChatFormat::kLlama3), "llama3");
  EXPECT_THROW(chat_format_from_name("jinja"), Error);
  EXPECT_THROW(render_chat(ChatFormat::kChatML, {{"robot", "x"}}, true), Error);
}

TEST(ChatTemplate, DefaultModelIsChatML) {
  const char* p = std::getenv("AQUAKV_MODEL");
  if (p == nullptr || *p == '\0') GTEST_SKIP() << "AQUAKV_MODEL not set";
  const auto f = GgufFile::open(p);
  EXPECT_EQ(detect_chat_format(f->get_string("tokenizer.chat_template")), ChatFormat::kChatML);
}

}  // namespace
}  // namespace aquakv
