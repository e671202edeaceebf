"""Chat templates: messages -> the prompt text the model is given.

Gemma 3's own template (the ``chat_template`` shipped with the model): turns
are ``<start_of_turn>{user|model}\\n{content}<end_of_turn>\\n`` and the prompt
ends with an open ``<start_of_turn>model\\n``. Gemma has no system role: the
template folds the system text into the first user turn, followed by a blank
line. We do the same, rather than use llama-cpp-python's ``chat_format="gemma"``,
which formats turns identically but silently *drops* system messages — the
agents' prompts carry their persona there. The BOS token is added by the
tokenizer, not here.

The simulator renders prompts with the same template, so its character-based
token estimate covers the same text.
"""

from __future__ import annotations

from collections.abc import Sequence

from cfexp.serving.request import ChatMessage, GenerationRequest

START = "<start_of_turn>"
END = "<end_of_turn>\n"


def _role(role: str) -> str:
    return "model" if role == "assistant" else "user" if role in ("user", "tool") else role


def render_gemma(messages: Sequence[ChatMessage]) -> str:
    """The Gemma 3 prompt for ``messages``, ending with an open model turn."""
    system = "\n\n".join(m.content.strip() for m in messages if m.role == "system")
    turns = [m for m in messages if m.role != "system"]
    parts: list[str] = []
    prefix = f"{system}\n\n" if system else ""
    if not turns and system:
        turns = [ChatMessage(role="user", content="")]
        prefix = system
    for index, message in enumerate(turns):
        lead = prefix if index == 0 else ""
        parts.append(f"{START}{_role(message.role)}\n{lead}{message.content.strip()}{END}")
    parts.append(f"{START}model\n")
    return "".join(parts)


def render_prompt(request: GenerationRequest) -> str:
    """The model's input text for any request (chat, or a single prompt)."""
    if request.kind == "chat":
        return render_gemma(request.messages)
    if request.raw or request.api == "openai":
        # /v1/completions and Ollama raw mode: the client's text, untouched.
        return request.prompt
    messages = [ChatMessage("user", request.prompt)]
    if request.system:
        messages.insert(0, ChatMessage("system", request.system))
    return render_gemma(messages)
