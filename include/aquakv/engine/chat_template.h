// Chat templates: turning a conversation into the prompt text a chat model was trained on.
// Owns: recognizing the model's template (the `tokenizer.chat_template` Jinja source) by
// markers it contains, the way llama.cpp's built-in matcher does (no Jinja engine), and
// rendering the common formats. Not: tokenization (the rendered text holds special-token texts
// such as "<|im_start|>", which the tokenizer parses) or generation.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace aquakv {

enum class ChatFormat { kChatML, kLlama3, kLlama2, kMistral, kPhi3, kGemma, kZephyr };

struct ChatMessage {
  std::string role;  // "system", "user" or "assistant"
  std::string content;
};

// The format a template's source text implies, or nullopt when no known marker is present.
std::optional<ChatFormat> detect_chat_format(std::string_view template_source);

// The format models of an architecture are trained with, for files that carry no
// tokenizer.chat_template: gemma, gemma2 and gemma3 -> kGemma; nullopt for the others.
std::optional<ChatFormat> chat_format_for_arch(std::string_view arch);

// The format for a --chat-template name ("chatml", "llama3", "llama2", "mistral", "phi3",
// "gemma", "zephyr"); throws Error listing the known names otherwise.
ChatFormat chat_format_from_name(std::string_view name);
const char* chat_format_name(ChatFormat f);

// Renders the messages; with add_assistant, ends with the opening of an assistant turn.
// Throws Error for unknown roles.
std::string render_chat(ChatFormat f, const std::vector<ChatMessage>& messages, bool add_assistant);

}  // namespace aquakv
