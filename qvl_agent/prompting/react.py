"""ReAct function calling in the exact text format of the original Qwen-VL ``openai_api.py``.

Pure text functions over plain dicts (no pydantic, no model): tool descriptions → the ReAct instruction,
OpenAI-style messages → ``(query, history)`` for ``model.chat``, model text → content or a function call,
and the stop words the server adds. ``query=None`` stands for the original's text-completion sentinel (the
last message is not from the user, so the model continues the last assistant turn).

Behaviours kept on purpose (they are what Qwen-VL-Chat was trained and served with):

- the system prompt (unless it is the default one) and the tool instruction are prefixed to the *last
  history user message* when there is history, otherwise to the query, as ``"{system}\\n\\nQuestion: {q}"``;
- a plain assistant answer gets a dummy ``Thought: I now know the final answer.\\nFinal answer: `` prefix
  while functions are offered (Chinese variant after a CJK message);
- ``parse_response`` needs ``"\\nAction:"`` preceded by a newline and takes the last Action/Action Input pair.
"""

from __future__ import annotations

import json
import re
from typing import Any

from qvl_agent.model.errors import InputError

TOOL_DESC = (
    "{name_for_model}: Call this tool to interact with the {name_for_human} API. "
    "What is the {name_for_human} API useful for? {description_for_model} Parameters: {parameters}"
)

REACT_INSTRUCTION = """Answer the following questions as best you can. You have access to the following APIs:

{tools_text}

Use the following format:

Question: the input question you must answer
Thought: you should always think about what to do
Action: the action to take, should be one of [{tools_name_text}]
Action Input: the input to the action
Observation: the result of the action
... (this Thought/Action/Action Input/Observation can be repeated zero or more times)
Thought: I now know the final answer
Final Answer: the final answer to the original input question

Begin!"""

DEFAULT_SYSTEM = "You are a helpful assistant."

DUMMY_THOUGHT = {
    "en": "\nThought: I now know the final answer.\nFinal answer: ",
    "zh": "\nThought: 我会作答了。\nFinal answer: ",
}

OBSERVATION_STOP = "Observation:"

_CJK = re.compile(r"[\u4e00-\u9fff]+")


class ReactFormatError(InputError):
    """A conversation that cannot be rendered in ReAct form; carries the original server's HTTP status/detail."""

    def __init__(self, detail: str, status_code: int = 400) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status_code = status_code


def _strip(text: str) -> str:
    return text.lstrip("\n").rstrip()


def function_names(func: dict[str, Any]) -> tuple[str, str, str]:
    """``(name_for_model, name_for_human, description_for_model)`` of a function in OpenAI or Qwen shape."""
    name = func.get("name", "")
    name_m = func.get("name_for_model", name)
    name_h = func.get("name_for_human", name) or name_m
    desc = func.get("description", "")
    desc_m = func.get("description_for_model", desc)
    return name_m, name_h, desc_m


def tool_description(func: dict[str, Any]) -> str:
    """One ``TOOL_DESC`` line for a function definition."""
    name_m, name_h, desc_m = function_names(func)
    return TOOL_DESC.format(
        name_for_model=name_m,
        name_for_human=name_h,
        description_for_model=desc_m,
        parameters=json.dumps(func.get("parameters", {}), ensure_ascii=False),
    )


def react_instruction(functions: list[dict[str, Any]]) -> str:
    """The ReAct instruction listing every function."""
    tools_text = "\n\n".join(tool_description(f) for f in functions)
    tools_name_text = ", ".join(function_names(f)[0] for f in functions)
    return REACT_INSTRUCTION.format(tools_text=tools_text, tools_name_text=tools_name_text)


def _get(message: Any, key: str) -> Any:
    return message.get(key) if isinstance(message, dict) else getattr(message, key, None)


def parse_messages(
    messages: list[dict[str, Any]], functions: list[dict[str, Any]] | None = None
) -> tuple[str | None, list[tuple[str, str]]]:
    """Turn OpenAI-style messages (+ function definitions) into ``(query, history)`` for ``model.chat``.

    Each message is a dict with ``role`` (system/user/assistant/function), ``content`` (text or None) and
    optionally ``function_call`` (``{"name", "arguments"}``). ``query`` is None in text-completion mode.
    Raises :class:`ReactFormatError` (status 400 + the original server's detail) for malformed conversations.
    """
    if all(_get(m, "role") != "user" for m in messages):
        raise ReactFormatError("Invalid request: Expecting at least one user message.")

    messages = list(messages)
    system = ""
    if _get(messages[0], "role") == "system":
        system = _strip(_get(messages.pop(0), "content") or "")
        if system == DEFAULT_SYSTEM:
            system = ""

    if functions:
        system = _strip(system + "\n\n" + react_instruction(functions))

    turns: list[dict[str, str]] = []  # merged user/assistant turns
    for index, message in enumerate(messages):
        role = _get(message, "role")
        content = _get(message, "content") or ""
        func_call = _get(message, "function_call")
        content = _strip(content)
        if role == "function":
            if not turns or turns[-1]["role"] != "assistant":
                raise ReactFormatError("Invalid request: Expecting role assistant before role function.")
            turns[-1]["content"] += f"\nObservation: {content}"
            if index == len(messages) - 1:
                turns[-1]["content"] += "\nThought:"
        elif role == "assistant":
            if not turns:
                raise ReactFormatError("Invalid request: Expecting role user before role assistant.")
            last_has_zh = bool(_CJK.search(turns[-1]["content"]))
            if func_call is None:
                if functions:
                    content = DUMMY_THOUGHT["zh" if last_has_zh else "en"] + content
            else:
                f_name, f_args = _get(func_call, "name"), _get(func_call, "arguments")
                if not content:
                    content = (
                        f"Thought: 我可以使用 {f_name} API。"
                        if last_has_zh
                        else f"Thought: I can use {f_name}."
                    )
                content = f"\n{content}\nAction: {f_name}\nAction Input: {f_args}"
            if turns[-1]["role"] == "user":
                turns.append({"role": "assistant", "content": _strip(content)})
            else:
                turns[-1]["content"] += content
        elif role == "user":
            turns.append({"role": "user", "content": content})
        else:
            raise ReactFormatError(f"Invalid request: Incorrect role {role}.")

    query: str | None = None
    if turns[-1]["role"] == "user":
        query = turns[-1]["content"]
        turns = turns[:-1]

    if len(turns) % 2 != 0:
        raise ReactFormatError("Invalid request")

    history: list[tuple[str, str]] = []
    for i in range(0, len(turns), 2):
        if turns[i]["role"] != "user" or turns[i + 1]["role"] != "assistant":
            raise ReactFormatError(
                "Invalid request: Expecting exactly one user (or function) role before every assistant role."
            )
        user_msg = _strip(turns[i]["content"])
        bot_msg = _strip(turns[i + 1]["content"])
        if system and i == len(turns) - 2:
            user_msg = f"{system}\n\nQuestion: {user_msg}"
            system = ""
        for thought in DUMMY_THOUGHT.values():
            thought = thought.lstrip("\n")
            if bot_msg.startswith(thought) and "\nAction: " in bot_msg:
                bot_msg = bot_msg[len(thought) :]
        history.append((user_msg, bot_msg))

    if system:
        if query is None:  # only reachable with no history at all, which the checks above rule out
            raise ReactFormatError("Invalid request: nothing to continue in text-completion mode.")
        query = f"{system}\n\nQuestion: {query}"
    return query, history


def parse_response(response: str) -> dict[str, Any]:
    """Read model text back as the original server did.

    Returns ``{"content": str, "function_call": {"name", "arguments"} | None, "finish_reason": str}`` with
    ``finish_reason`` ``"function_call"`` or ``"stop"``. Never raises for any string.
    """
    func_name, func_args = "", ""
    i = response.rfind("\nAction:")
    j = response.rfind("\nAction Input:")
    k = response.rfind("\nObservation:")
    if 0 <= i < j:
        if k < j:
            # the stop word "Observation:" was cut off by generation: add it back
            response = response.rstrip() + "\nObservation:"
        k = response.rfind("\nObservation:")
        func_name = response[i + len("\nAction:") : j].strip()
        func_args = response[j + len("\nAction Input:") : k].strip()
    if func_name:
        return {
            "content": response[:i],
            "function_call": {"name": func_name, "arguments": func_args},
            "finish_reason": "function_call",
        }
    z = response.rfind("\nFinal Answer: ")
    if z >= 0:
        response = response[z + len("\nFinal Answer: ") :]
    return {"content": response, "function_call": None, "finish_reason": "stop"}


def add_extra_stop_words(stop_words: list[str] | None) -> list[str] | None:
    """The request's stop words plus each one with its leading newlines removed (as the original server)."""
    if not stop_words:
        return stop_words
    result = list(stop_words)
    for word in stop_words:
        stripped = word.lstrip("\n")
        if stripped and stripped not in result:
            result.append(stripped)
    return result


def stop_words(request_stop: list[str] | None, has_functions: bool) -> list[str] | None:
    """Stop strings for a request: the caller's (see :func:`add_extra_stop_words`) + ``Observation:``
    whenever functions are offered."""
    words = add_extra_stop_words(request_stop)
    if has_functions:
        words = words or []
        if OBSERVATION_STOP not in words:
            words.append(OBSERVATION_STOP)
    return words


def stop_words_ids(words: list[str] | None, tokenizer: Any) -> list[list[int]] | None:
    """The token ids of each stop word (``tokenizer.encode``), as passed to ``model.chat(stop_words_ids=...)``."""
    return [tokenizer.encode(word) for word in words] if words else None


def trim_stop_words(response: str, stop_words: list[str] | None) -> str:
    """Cut ``response`` at each stop word in turn."""
    for stop in stop_words or []:
        idx = response.find(stop)
        if idx != -1:
            response = response[:idx]
    return response


def split_thought(content: str) -> str | None:
    """The last ``Thought:`` text of a ReAct turn (``"Thought: x"`` → ``"x"``), or None when there is none."""
    idx = content.rfind("Thought:")
    if idx < 0:
        return None
    thought = content[idx + len("Thought:") :].strip()
    return thought or None
