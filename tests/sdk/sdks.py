"""The official OpenAI and Anthropic Python SDKs and LangChain, unchanged, against `cocoon devnet`.

Run by tests/sdk/run.sh (which starts the devnet and installs the pinned packages). Every check
uses the SDK as an application would: only `base_url` (and a dummy key) differ from using the
vendor's own service. Prints one line per check; exits non-zero at the first failure.

    COCOON_API=http://127.0.0.1:8080 python tests/sdk/sdks.py
"""

import json
import os
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import anthropic
import openai
from langchain_openai import ChatOpenAI

API = os.environ.get("COCOON_API", "http://127.0.0.1:8080")
# The devnet worker's admin endpoint (node 4 of the default devnet: admin port 9100 + 4).
WORKER_ADMIN = os.environ.get("COCOON_WORKER_ADMIN", "http://127.0.0.1:9104")
MODEL = os.environ.get("COCOON_MODEL", "smollm2-135m-instruct")

oai = openai.OpenAI(base_url=f"{API}/v1", api_key="not-checked", max_retries=0, timeout=300)
ant = anthropic.Anthropic(base_url=API, api_key="not-checked", max_retries=0, timeout=300)

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "enum": ["Oslo", "Lima", "Pune"]},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city.", "parameters": WEATHER}}]
ASK = [{"role": "user", "content": "What is the weather in Oslo right now?"}]


def check(name, ok, detail=""):
    print(f"{'ok  ' if ok else 'FAIL'} {name}{': ' + str(detail) if detail else ''}", flush=True)
    if not ok:
        sys.exit(1)


def weather_ok(arguments):
    """`arguments` (JSON text or a dict) match WEATHER exactly."""
    args = json.loads(arguments) if isinstance(arguments, str) else arguments
    return (
        isinstance(args, dict)
        and set(args) == {"city", "unit"}
        and args["city"] in WEATHER["properties"]["city"]["enum"]
        and args["unit"] in WEATHER["properties"]["unit"]["enum"]
    )


def chat_plain():
    r = oai.chat.completions.create(model=MODEL, messages=ASK, max_tokens=12)
    check("chat, whole", r.choices[0].message.content is not None and r.usage.completion_tokens >= 1, r.choices[0].message.content)
    stream = oai.chat.completions.create(model=MODEL, messages=ASK, max_tokens=12, stream=True, stream_options={"include_usage": True})
    text, usage = "", None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
        usage = chunk.usage or usage
    check("chat, streamed", text != "" and usage is not None and usage.completion_tokens >= 1, text)


def tools_named_and_required():
    choice = {"type": "function", "function": {"name": "get_weather"}}
    r = oai.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, tool_choice=choice, max_tokens=64)
    call = r.choices[0].message.tool_calls[0]
    check("named tool call matches its schema", call.function.name == "get_weather" and weather_ok(call.function.arguments), call.function.arguments)
    check("named tool call finishes for tool_calls", r.choices[0].finish_reason == "tool_calls", r.choices[0].finish_reason)
    r = oai.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, tool_choice="required", max_tokens=64)
    calls = r.choices[0].message.tool_calls or []
    check("tool_choice required calls a tool", len(calls) == 1 and weather_ok(calls[0].function.arguments), calls)
    # Streamed: the SDK's own accumulation of tool_calls deltas.
    stream = oai.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, tool_choice=choice, max_tokens=64, stream=True)
    name, arguments = None, ""
    for chunk in stream:
        for d in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            name = name or d.function.name
            arguments += d.function.arguments or ""
    check("streamed tool call deltas", name == "get_weather" and weather_ok(arguments), arguments)
    return call


def tool_conversation(call):
    messages = ASK + [
        {"role": "assistant", "content": None, "tool_calls": [{"id": call.id, "type": "function", "function": {"name": call.function.name, "arguments": call.function.arguments}}]},
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": -3, "sky": "snow"})},
    ]
    r = oai.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS, max_tokens=24)
    m = r.choices[0].message
    check("two-turn tool conversation answers", (m.content or "") != "" or bool(m.tool_calls), m.content)


def structured_and_logprobs():
    schema = {"type": "object", "properties": {"answer": {"type": "string", "enum": ["yes", "no"]}, "confidence": {"type": "integer", "minimum": 0, "maximum": 9}},
              "required": ["answer", "confidence"], "additionalProperties": False}
    r = oai.chat.completions.create(
        model=MODEL, max_tokens=48,
        messages=[{"role": "user", "content": "Is Oslo in Norway? Answer in JSON."}],
        response_format={"type": "json_schema", "json_schema": {"name": "verdict", "schema": schema, "strict": True}},
    )
    value = json.loads(r.choices[0].message.content)
    valid = set(value) == {"answer", "confidence"} and value["answer"] in ("yes", "no") and isinstance(value["confidence"], int) and 0 <= value["confidence"] <= 9
    check("json_schema output parses and validates", valid, value)
    r = oai.chat.completions.create(model=MODEL, messages=ASK, max_tokens=6, logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    check("logprobs with top_logprobs of 3", len(content) >= 1 and all(len(t.top_logprobs) == 3 and t.logprob <= 0 for t in content), len(content))
    r = oai.chat.completions.create(model=MODEL, messages=ASK, max_tokens=6, n=2)
    check("n = 2 answers", [c.index for c in r.choices] == [0, 1], len(r.choices))
    try:
        oai.chat.completions.create(model=MODEL, messages=ASK, max_tokens=6, seed=7)
        check("seed with sampling is refused", False)
    except openai.BadRequestError as e:
        check("seed with sampling is refused, naming it", e.body.get("param") == "seed", e.body)


def cos(x, y):
    return sum(p * q for p, q in zip(x, y)) / (sum(p * p for p in x) ** 0.5 * sum(q * q for q in y) ** 0.5)


def embeddings():
    # The SDK asks for base64 by default and decodes it.
    r = oai.embeddings.create(model="all-minilm-l6-v2", input=["A cat sits on the mat.", "A cat sits on the mat.", "Stock markets fell."])
    a, b, c = (d.embedding for d in r.data)
    check("embeddings of equal dimensions", len(a) == len(b) == len(c) == 384, len(a))
    check("a text's embedding has cosine 1 with itself", abs(cos(a, b) - 1) < 1e-6 and cos(a, c) < 0.9, (cos(a, b), cos(a, c)))
    check("embeddings are priced per input token", r.usage.prompt_tokens > 0, r.usage)


def responses_api():
    r = oai.responses.create(model=MODEL, input="Name a bird.", instructions="Answer briefly.", max_output_tokens=12)
    check("Responses API, whole", r.output_text != "", r.output_text)
    # As with OpenAI's service, an answer cut at max_output_tokens ends with
    # `response.incomplete` (the SDK's stream helper waits for `response.completed`), so read the
    # raw event stream.
    text, last = "", None
    for event in oai.responses.create(model=MODEL, input="Name a fish.", max_output_tokens=12, stream=True):
        if event.type == "response.output_text.delta":
            text += event.delta
        last = event
    ended = last is not None and last.type in ("response.completed", "response.incomplete")
    check("Responses API, streamed", ended and text != "" and last.response.output_text == text, text)
    r = oai.responses.create(
        model=MODEL, input="What is the weather in Lima?", max_output_tokens=64,
        tools=[{"type": "function", "name": "get_weather", "description": "Current weather.", "parameters": WEATHER}],
        tool_choice={"type": "function", "name": "get_weather"},
    )
    calls = [o for o in r.output if o.type == "function_call"]
    check("Responses API function call", len(calls) == 1 and weather_ok(calls[0].arguments), calls)


def anthropic_api():
    m = ant.messages.create(model=MODEL, max_tokens=12, system="Answer briefly.", messages=[{"role": "user", "content": "Name a bird."}])
    check("Anthropic messages.create", m.content[0].type == "text" and m.usage.output_tokens >= 1, m.content)
    with ant.messages.stream(model=MODEL, max_tokens=12, messages=[{"role": "user", "content": "Name a fish."}]) as stream:
        streamed = "".join(stream.text_stream)
        final = stream.get_final_message()
    check("Anthropic messages, streamed", streamed != "" and final.content[0].text == streamed, streamed)
    tools = [{"name": "get_weather", "description": "Current weather in a city.", "input_schema": WEATHER}]
    m = ant.messages.create(model=MODEL, max_tokens=64, tools=tools, tool_choice={"type": "tool", "name": "get_weather"},
                            messages=[{"role": "user", "content": "What is the weather in Pune?"}])
    uses = [b for b in m.content if b.type == "tool_use"]
    check("Anthropic tool use", m.stop_reason == "tool_use" and len(uses) == 1 and weather_ok(uses[0].input), uses)


def metric(name):
    """The sum of a Prometheus metric's samples on the worker."""
    text = urllib.request.urlopen(f"{WORKER_ADMIN}/metrics", timeout=10).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def sixteen_at_once():
    """16 concurrent streams to one worker with 2 slots: all answered, after queueing."""
    before = metric("cocoon_inference_worker_queue_wait_seconds_count")

    def stream(i):
        chunks = oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": f"Count to {i}."}], max_tokens=16, stream=True)
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    with ThreadPoolExecutor(16) as pool:
        texts = list(pool.map(stream, range(16)))  # a 429 would raise here
    waited = metric("cocoon_inference_worker_queue_wait_seconds_count") - before
    check("16 concurrent streams all answered (none 429)", all(texts), sum(1 for t in texts if t))
    check("the worker's queue held some of them", waited >= 1, f"{waited:.0f} waited")


def langchain():
    llm = ChatOpenAI(base_url=f"{API}/v1", api_key="not-checked", model=MODEL, max_tokens=64, max_retries=0)
    message = llm.bind_tools(TOOLS, tool_choice="get_weather").invoke("What is the weather in Oslo?")
    calls = message.tool_calls
    check("LangChain ChatOpenAI.bind_tools", len(calls) == 1 and calls[0]["name"] == "get_weather" and weather_ok(calls[0]["args"]), calls)


if __name__ == "__main__":
    chat_plain()
    call = tools_named_and_required()
    tool_conversation(call)
    structured_and_logprobs()
    embeddings()
    responses_api()
    anthropic_api()
    langchain()
    sixteen_at_once()
    print("all SDK checks passed")
