// Where traces are exported (OTLP over HTTP), read the way OpenTelemetry's SDKs read their environment
// (https://opentelemetry.io/docs/specs/otel/protocol/exporter/), so one set of variables configures the
// coordinator (wrangler vars) and the worker (process environment) alike. Tracing is off unless one is set.

/** The variables that configure trace export; the names are OpenTelemetry's. */
export interface OtlpVars {
  /** The collector's base URL; traces go to `<base>/v1/traces`. */
  OTEL_EXPORTER_OTLP_ENDPOINT?: string | undefined;
  /** The traces URL itself, used as it is; wins over the base. */
  OTEL_EXPORTER_OTLP_TRACES_ENDPOINT?: string | undefined;
  /** `key=value,key2=value2`, values URL-encoded: e.g. a vendor's API key header. */
  OTEL_EXPORTER_OTLP_HEADERS?: string | undefined;
  OTEL_SERVICE_NAME?: string | undefined;
}

export interface OtlpExport {
  /** Where the OTLP/HTTP protobuf requests go. */
  url: string;
  headers: Record<string, string>;
  serviceName: string;
}

function httpUrl(name: string, raw: string): URL {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new Error(`${name} must be an http(s) URL such as http://127.0.0.1:4318, got "${raw}"`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:")
    throw new Error(`${name} must be an http(s) URL such as http://127.0.0.1:4318, got "${raw}"`);
  return url;
}

/** OTEL_EXPORTER_OTLP_HEADERS: comma-separated `key=value` pairs, values URL-encoded (the spec's format). */
export function parseOtlpHeaders(raw: string | undefined): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const pair of (raw ?? "").split(",")) {
    if (pair.trim() === "") continue;
    const at = pair.indexOf("=");
    const key = pair.slice(0, at).trim();
    if (at < 1 || key === "")
      throw new Error(`OTEL_EXPORTER_OTLP_HEADERS must be key=value pairs separated by commas, got "${pair.trim()}"`);
    headers[key] = decodeURIComponent(pair.slice(at + 1).trim());
  }
  return headers;
}

/**
 * The export these variables ask for, or null when neither endpoint is set (tracing off). Throws an Error
 * naming the variable when one is malformed.
 */
export function otlpExport(vars: OtlpVars, defaultServiceName: string): OtlpExport | null {
  const traces = vars.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT?.trim();
  const base = vars.OTEL_EXPORTER_OTLP_ENDPOINT?.trim();
  let url: string;
  if (traces) url = httpUrl("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", traces).href;
  else if (base) url = `${httpUrl("OTEL_EXPORTER_OTLP_ENDPOINT", base).href.replace(/\/+$/, "")}/v1/traces`;
  else return null;
  return {
    url,
    headers: parseOtlpHeaders(vars.OTEL_EXPORTER_OTLP_HEADERS),
    serviceName: vars.OTEL_SERVICE_NAME?.trim() || defaultServiceName,
  };
}
