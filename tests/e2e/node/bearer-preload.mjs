// Preloaded (node --import) into the conformance suite, which has no option for an Authorization
// header: every request made through undici or the global fetch carries MCPGATE_BEARER_TOKEN.
import { Agent, setGlobalDispatcher } from "undici";

const token = process.env.MCPGATE_BEARER_TOKEN;
if (!token) {
  throw new Error("bearer-preload.mjs: set MCPGATE_BEARER_TOKEN");
}

class BearerAgent extends Agent {
  dispatch(options, handler) {
    const headers = withoutAuthorization(options.headers);
    headers.push("authorization", `Bearer ${token}`);
    return super.dispatch({ ...options, headers }, handler);
  }
}

// undici passes headers as a flat [name, value, ...] array, an iterable of pairs, or an object.
function withoutAuthorization(headers) {
  const flat = [];
  if (headers == null) return flat;
  if (Array.isArray(headers) && (headers.length === 0 || !Array.isArray(headers[0]))) {
    for (let i = 0; i < headers.length; i += 2) flat.push(headers[i], headers[i + 1]);
  } else if (typeof headers[Symbol.iterator] === "function") {
    for (const [name, value] of headers) flat.push(name, value);
  } else {
    for (const [name, value] of Object.entries(headers)) flat.push(name, value);
  }
  const kept = [];
  for (let i = 0; i < flat.length; i += 2) {
    if (String(flat[i]).toLowerCase() !== "authorization") kept.push(flat[i], flat[i + 1]);
  }
  return kept;
}

setGlobalDispatcher(new BearerAgent());
