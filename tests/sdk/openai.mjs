// The official `openai` npm package, unchanged, against `cocoon devnet`: a streamed chat and a
// named tool call whose arguments match the schema. Run by tests/sdk/run.sh.
import OpenAI from "openai";

const api = process.env.COCOON_API ?? "http://127.0.0.1:8080";
const model = process.env.COCOON_MODEL ?? "smollm2-135m-instruct";
const client = new OpenAI({ baseURL: `${api}/v1`, apiKey: "not-checked", maxRetries: 0, timeout: 300_000 });

function check(name, ok, detail = "") {
  console.log(`${ok ? "ok  " : "FAIL"} ${name}${detail === "" ? "" : ": " + JSON.stringify(detail)}`);
  if (!ok) process.exit(1);
}

const messages = [{ role: "user", content: "What is the weather in Oslo?" }];
const stream = await client.chat.completions.create({ model, messages, max_tokens: 12, stream: true });
let text = "";
for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? "";
check("node: chat, streamed", text !== "", text);

const parameters = {
  type: "object",
  properties: { city: { type: "string", enum: ["Oslo", "Lima"] } },
  required: ["city"],
  additionalProperties: false,
};
const r = await client.chat.completions.create({
  model,
  messages,
  max_tokens: 48,
  tools: [{ type: "function", function: { name: "get_weather", description: "Weather.", parameters } }],
  tool_choice: { type: "function", function: { name: "get_weather" } },
});
const call = r.choices[0].message.tool_calls?.[0];
const args = JSON.parse(call?.function?.arguments ?? "null");
check("node: named tool call", call?.function?.name === "get_weather" && ["Oslo", "Lima"].includes(args?.city), args);
console.log("all node SDK checks passed");
