// Chat formats of engine/chat_template.h.
#include "aquakv/engine/chat_template.h"

#include "aquakv/util/error.h"

namespace aquakv {
namespace {

bool has(std::string_view s, std::string_view m) { return s.find(m) != std::string_view::npos; }

struct Named {
  const char* name;
  ChatFormat format;
};
constexpr Named kNames[] = {
    {"chatml", ChatFormat::kChatML}, {"llama3", ChatFormat::kLlama3},
    {"llama2", ChatFormat::kLlama2}, {"mistral", ChatFormat::kMistral},
    {"phi3", ChatFormat::kPhi3},     {"gemma", ChatFormat::kGemma},
    {"zephyr", ChatFormat::kZephyr},
};

void check_role(const ChatMessage& m) {
  if (m.role != "system" && m.role != "user" && m.role != "assistant") {
    fail("chat message role '{}' is not one of system, user, assistant", m.role);
  }
}

// Formats that have no system turn fold the system text into the first user message.
std::vector<ChatMessage> fold_system(const std::vector<ChatMessage>& msgs, const char* sep) {
  std::vector<ChatMessage> out;
  std::string pending;
  for (const auto& m : msgs) {
    if (m.role == "system") {
      pending += m.content;
      continue;
    }
    ChatMessage c = m;
    if (!pending.empty() && m.role == "user") {
      c.content = pending + sep + m.content;
      pending.clear();
    }
    out.push_back(std::move(c));
  }
  if (!pending.empty()) out.insert(out.begin(), {"user", pending});
  return out;
}

}  // namespace

std::optional<ChatFormat> detect_chat_format(std::string_view t) {
  if (has(t, "<|im_start|>")) return ChatFormat::kChatML;
  if (has(t, "<|start_header_id|>") && has(t, "<|end_header_id|>")) return ChatFormat::kLlama3;
  if (has(t, "<start_of_turn>")) return ChatFormat::kGemma;
  if (has(t, "<|assistant|>") && has(t, "<|end|>")) return ChatFormat::kPhi3;
  if (has(t, "<|user|>") && has(t, "</s>")) return ChatFormat::kZephyr;
  if (has(t, "[INST]")) return has(t, "<<SYS>>") ? ChatFormat::kLlama2 : ChatFormat::kMistral;
  return std::nullopt;
}

std::optional<ChatFormat> chat_format_for_arch(std::string_view arch) {
  if (arch == "gemma" || arch == "gemma2" || arch == "gemma3") return ChatFormat::kGemma;
  return std::nullopt;
}

ChatFormat chat_format_from_name(std::string_view name) {
  std::string known;
  for (const auto& n : kNames) {
    if (name == n.name) return n.format;
    known += (known.empty() ? "" : ", ") + std::string(n.name);
  }
  fail("--chat-template: unknown template '{}' (known: {})", name, known);
}

const char* chat_format_name(ChatFormat f) {
  for (const auto& n : kNames) {
    if (n.format == f) return n.name;
  }
  return "?";
}

std::string render_chat(ChatFormat f, const std::vector<ChatMessage>& msgs, bool add_assistant) {
  for (const auto& m : msgs) check_role(m);
  std::string out;
  switch (f) {
    case ChatFormat::kChatML:
      for (const auto& m : msgs) out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
      if (add_assistant) out += "<|im_start|>assistant\n";
      break;
    case ChatFormat::kLlama3:
      for (const auto& m : msgs) {
        out += "<|start_header_id|>" + m.role + "<|end_header_id|>\n\n" + m.content + "<|eot_id|>";
      }
      if (add_assistant) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
      break;
    case ChatFormat::kLlama2:
    case ChatFormat::kMistral: {
      // [INST] user [/INST] assistant</s>; llama2 wraps a system text in <<SYS>> markers.
      const bool sys_tags = f == ChatFormat::kLlama2;
      std::string sys;
      for (const auto& m : msgs) {
        if (m.role == "system") {
          sys = sys_tags ? "<<SYS>>\n" + m.content + "\n<</SYS>>\n\n" : m.content + "\n\n";
        } else if (m.role == "user") {
          out += "[INST] " + sys + m.content + " [/INST]";
          sys.clear();
        } else {
          out += m.content + "</s>";
        }
      }
      break;
    }
    case ChatFormat::kPhi3:
      for (const auto& m : msgs) out += "<|" + m.role + "|>\n" + m.content + "<|end|>\n";
      if (add_assistant) out += "<|assistant|>\n";
      break;
    case ChatFormat::kZephyr:
      for (const auto& m : msgs) out += "<|" + m.role + "|>\n" + m.content + "</s>\n";
      if (add_assistant) out += "<|assistant|>\n";
      break;
    case ChatFormat::kGemma:
      for (const auto& m : fold_system(msgs, "\n\n")) {
        const std::string role = m.role == "assistant" ? "model" : m.role;
        out += "<start_of_turn>" + role + "\n" + m.content + "<end_of_turn>\n";
      }
      if (add_assistant) out += "<start_of_turn>model\n";
      break;
  }
  return out;
}

}  // namespace aquakv
