// The official Node `openai` SDK as a client of a gateway, for tests/e2e/test_node_sdk.py:
//
//   OPENAI_BASE_URL=http://127.0.0.1:PORT/v1 OPENAI_API_KEY=KEY node sdk.mjs SCENARIO [MODEL]
//
// prints one JSON object on stdout: what the SDK made of the answer, or, when the SDK threw
// one of its API errors, {"error": {...}} with the class it chose. Anything else is a crash
// (exit 1, stack on stderr).
import OpenAI from 'openai';

const [scenario, model = 'm'] = process.argv.slice(2);
const client = new OpenAI({
  baseURL: process.env.OPENAI_BASE_URL,
  apiKey: process.env.OPENAI_API_KEY,
  maxRetries: 0, // the test asserts on the first answer, 429s included
  timeout: 20_000,
});
const messages = [{ role: 'user', content: 'hello there' }];

const scenarios = {
  async chat() {
    const { data, response } = await client.chat.completions
      .create({ model, messages })
      .withResponse();
    return {
      content: data.choices[0].message.content,
      usage: data.usage,
      request_id: data._request_id,
      header_request_id: response.headers.get('x-request-id'),
      processing_ms: response.headers.get('openai-processing-ms'),
    };
  },

  async chatStream() {
    const { data: stream, request_id } = await client.chat.completions
      .create({ model, messages, stream: true, stream_options: { include_usage: true } })
      .withResponse();
    const chunks = [];
    for await (const chunk of stream) chunks.push(chunk);
    return {
      request_id,
      text: chunks.map((c) => c.choices[0]?.delta?.content ?? '').join(''),
      chunks: chunks.length,
      last_choices: chunks.at(-1).choices,
      usage: chunks.at(-1).usage,
    };
  },

  async responses() {
    const answer = await client.responses.create({
      model, input: 'knock knock', instructions: 'Answer briefly.',
    });
    return {
      id: answer.id,
      status: answer.status,
      output_text: answer.output_text,
      instructions: answer.instructions,
      usage: answer.usage,
      request_id: answer._request_id,
    };
  },

  async responsesStream() {
    const { data: stream, request_id } = await client.responses
      .create({ model, input: 'ping', stream: true })
      .withResponse();
    const events = [];
    for await (const event of stream) events.push(event);
    const done = events.at(-1).response;
    return {
      request_id,
      types: events.map((e) => e.type),
      sequence: events.map((e) => e.sequence_number),
      text: events.filter((e) => e.type === 'response.output_text.delta')
        .map((e) => e.delta).join(''),
      output: done.output,
      usage: done.usage,
    };
  },
};

try {
  const run = scenarios[scenario];
  if (!run) throw new Error(`unknown scenario ${scenario}: ${Object.keys(scenarios)}`);
  console.log(JSON.stringify(await run()));
} catch (err) {
  if (!(err instanceof OpenAI.APIError)) throw err;
  const classes = ['AuthenticationError', 'RateLimitError', 'NotFoundError', 'BadRequestError'];
  console.log(JSON.stringify({
    error: {
      class: err.constructor.name,
      instance_of: classes.filter((name) => err instanceof OpenAI[name]),
      status: err.status,
      body: err.error,
      code: err.code,
      param: err.param,
      type: err.type,
      message: err.message,
      request_id: err.requestID ?? err.request_id,  // (request_id in openai 4.x)
      // (a Headers object in openai 5+, a plain object in 4.x)
      retry_after: typeof err.headers?.get === 'function'
        ? err.headers.get('retry-after') : err.headers?.['retry-after'],
    },
  }));
}
