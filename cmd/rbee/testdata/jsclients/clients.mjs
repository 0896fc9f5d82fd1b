// The official JavaScript clients against a running rbee: node clients.mjs
// BASE_URL MODEL. Each check prints "ok <name>" or throws, which exits 1
// with the failure; cmd/rbee/jsclients_test.go runs it.
import OpenAI from "openai";
import { Ollama } from "ollama";

const [base, model, toolModel] = process.argv.slice(2);
if (!base || !model) {
  console.error("usage: node clients.mjs BASE_URL MODEL");
  process.exit(2);
}
const openai = new OpenAI({ baseURL: `${base}/v1`, apiKey: process.env.RBEE_API_KEY ?? "none", maxRetries: 0 });
const ollama = new Ollama({ host: base });

function check(cond, what, got) {
  if (!cond) {
    throw new Error(`${what}: got ${JSON.stringify(got)}`);
  }
}

async function step(name, f) {
  await f();
  console.log(`ok ${name}`);
}

// A schema whose every value is short, so that 64 tokens always close it.
const schema = {
  type: "object",
  properties: {
    mood: { type: "string", enum: ["happy", "sad", "sleepy"] },
    ok: { type: "boolean" },
    size: { type: "string", enum: ["big", "small"] },
  },
  required: ["mood", "ok", "size"],
  additionalProperties: false,
};

function valid(text) {
  let v;
  try {
    v = JSON.parse(text);
  } catch {
    return false;
  }
  const keys = Object.keys(v).sort().join(",");
  return (
    keys === "mood,ok,size" &&
    schema.properties.mood.enum.includes(v.mood) &&
    typeof v.ok === "boolean" &&
    schema.properties.size.enum.includes(v.size)
  );
}

await step("openai models.list and models.retrieve", async () => {
  const list = await openai.models.list();
  check(list.data.some((m) => m.id === model), "models.list", list.data);
  const one = await openai.models.retrieve(model);
  check(one.id === model && one.object === "model", "models.retrieve", one);
});

await step("openai embeddings.create", async () => {
  // The SDK asks for base64 unless told otherwise, and decodes it.
  const r = await openai.embeddings.create({ model, input: ["Once upon a time", "The cat sat."] });
  const [a, b] = r.data.map((d) => d.embedding);
  const norm = (v) => Math.sqrt(v.reduce((s, x) => s + x * x, 0));
  check(r.data.length === 2 && a.length > 0 && a.length === b.length, "embeddings", r);
  check(Math.abs(norm(a) - 1) < 1e-4 && Math.abs(norm(b) - 1) < 1e-4 && a.some((x, i) => x !== b[i]), "unit, distinct vectors", r);
  check(r.usage.prompt_tokens > 0, "usage", r.usage);
  const f = await openai.embeddings.create({ model, input: "Once upon a time", encoding_format: "float" });
  check(f.data[0].embedding.every((x, i) => Math.abs(x - a[i]) < 1e-6), "float equals base64", f.data[0]);
});

await step("ollama embed", async () => {
  const r = await ollama.embed({ model, input: ["Once upon a time", "The cat sat."] });
  check(r.embeddings.length === 2 && r.embeddings[0].length > 0 && r.prompt_eval_count > 0, "embed", r);
});

await step("openai chat.completions", async () => {
  const r = await openai.chat.completions.create({
    model,
    messages: [{ role: "user", content: "Once upon a time" }],
    max_tokens: 8,
    temperature: 0,
  });
  check(r.choices[0].message.content.length > 0 && r.usage.completion_tokens > 0, "chat", r);
});

await step("openai chat.completions streamed", async () => {
  const stream = await openai.chat.completions.create({
    model,
    messages: [{ role: "user", content: "Once upon a time" }],
    max_tokens: 8,
    temperature: 0,
    stream: true,
    stream_options: { include_usage: true },
  });
  let text = "";
  let usage;
  for await (const chunk of stream) {
    text += chunk.choices[0]?.delta?.content ?? "";
    usage = chunk.usage ?? usage;
  }
  check(text.length > 0 && usage?.completion_tokens > 0, "streamed chat", { text, usage });
});

await step("openai json_schema structured output, 50 samples at temperature 1", async () => {
  for (let i = 0; i < 50; i++) {
    const r = await openai.chat.completions.create({
      model,
      messages: [{ role: "user", content: "Describe the cat." }],
      max_tokens: 64,
      temperature: 1,
      seed: i,
      response_format: { type: "json_schema", json_schema: { name: "cat", schema, strict: true } },
    });
    const text = r.choices[0].message.content;
    check(r.choices[0].finish_reason === "stop" && valid(text), `sample ${i}`, r.choices[0]);
  }
});

await step("ollama list", async () => {
  const r = await ollama.list();
  check(r.models.some((m) => m.name === model), "list", r);
});

await step("ollama generate", async () => {
  const r = await ollama.generate({ model, prompt: "Once upon a time", options: { temperature: 0, num_predict: 8 } });
  check(r.done && r.response.length > 0 && r.eval_count > 0, "generate", r);
});

await step("ollama generate streamed", async () => {
  let text = "";
  let last;
  for await (const part of await ollama.generate({
    model,
    prompt: "Once upon a time",
    stream: true,
    options: { temperature: 0, num_predict: 8 },
  })) {
    text += part.response;
    last = part;
  }
  check(text.length > 0 && last.done, "streamed generate", { text, last });
});

await step("ollama chat", async () => {
  const r = await ollama.chat({
    model,
    messages: [{ role: "user", content: "Once upon a time" }],
    options: { temperature: 0, num_predict: 8 },
  });
  check(r.done && r.message.role === "assistant" && r.message.content.length > 0, "chat", r);
});

await step("ollama chat with a structured format", async () => {
  for (let i = 0; i < 10; i++) {
    const r = await ollama.chat({
      model,
      messages: [{ role: "user", content: "Describe the cat." }],
      format: schema,
      options: { temperature: 1, seed: i, num_predict: 64 },
    });
    check(valid(r.message.content), `format sample ${i}`, r.message);
  }
});

await step("openai chat.completions with n 3", async () => {
  const r = await openai.chat.completions.create({
    model,
    messages: [{ role: "user", content: "Once upon a time" }],
    max_tokens: 12,
    temperature: 1,
    seed: 5,
    n: 3,
  });
  check(
    r.choices.length === 3 && r.choices.every((c, i) => c.index === i && c.finish_reason && c.message.content.length > 0),
    "n 3",
    r.choices,
  );
  check(new Set(r.choices.map((c) => c.message.content)).size > 1, "three different choices", r.choices);
});

await step("openai chat.completions with logprobs", async () => {
  const r = await openai.chat.completions.create({
    model,
    messages: [{ role: "user", content: "Once upon a time" }],
    max_tokens: 8,
    temperature: 0,
    logprobs: true,
    top_logprobs: 3,
  });
  const content = r.choices[0].logprobs?.content ?? [];
  check(
    content.length === r.usage.completion_tokens &&
      content.every((t) => t.logprob <= 0 && t.top_logprobs.length === 3 && t.top_logprobs[0].token === t.token),
    "logprobs",
    r.choices[0].logprobs,
  );
});

await step("openai chat.completions with logprobs streamed", async () => {
  const stream = await openai.chat.completions.create({
    model,
    messages: [{ role: "user", content: "Once upon a time" }],
    max_tokens: 8,
    temperature: 0,
    logprobs: true,
    top_logprobs: 2,
    stream: true,
    stream_options: { include_usage: true },
  });
  let tokens = 0;
  let usage;
  for await (const chunk of stream) {
    for (const t of chunk.choices[0]?.logprobs?.content ?? []) {
      check(t.top_logprobs.length === 2 && Array.isArray(t.bytes), "streamed token", t);
      tokens++;
    }
    usage = chunk.usage ?? usage;
  }
  check(tokens > 0 && tokens === usage?.completion_tokens, "streamed logprobs", { tokens, usage });
});

// Tool calls, with a model whose chat template takes tools (the third argument).
const tools = [
  {
    type: "function",
    function: {
      name: "get_weather",
      description: "The weather in a city",
      parameters: {
        type: "object",
        properties: { city: { type: "string", minLength: 1, maxLength: 12 } },
        required: ["city"],
        additionalProperties: false,
      },
    },
  },
];

function validCity(args) {
  const v = JSON.parse(args);
  return Object.keys(v).join(",") === "city" && typeof v.city === "string" && v.city.length > 0;
}

await step("openai tool calls", async () => {
  const r = await openai.chat.completions.create({
    model: toolModel,
    messages: [{ role: "user", content: "What is the weather in Paris?" }],
    tools,
    tool_choice: "required",
    max_tokens: 64,
    seed: 2,
  });
  const c = r.choices[0];
  const call = c.message.tool_calls?.[0];
  check(
    c.finish_reason === "tool_calls" && call?.type === "function" && call.function.name === "get_weather" && validCity(call.function.arguments),
    "tool call",
    c,
  );
});

await step("openai tool calls streamed", async () => {
  const stream = await openai.chat.completions.create({
    model: toolModel,
    messages: [{ role: "user", content: "What is the weather in Paris?" }],
    tools,
    tool_choice: { type: "function", function: { name: "get_weather" } },
    max_tokens: 64,
    seed: 3,
    stream: true,
  });
  let id = "";
  let name = "";
  let args = "";
  let finish;
  for await (const chunk of stream) {
    const c = chunk.choices[0];
    for (const d of c?.delta?.tool_calls ?? []) {
      check(d.index === 0, "delta index", d);
      id += d.id ?? "";
      name += d.function?.name ?? "";
      args += d.function?.arguments ?? "";
    }
    finish = c?.finish_reason ?? finish;
  }
  check(id && name === "get_weather" && finish === "tool_calls" && validCity(args), "streamed tool call", { id, name, args, finish });
});
