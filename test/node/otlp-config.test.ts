// Trace export settings (shared/config/otlp-config.ts), read as OpenTelemetry's SDKs read their environment.
import { describe, expect, it } from "vitest";
import { otlpExport, parseOtlpHeaders } from "../../shared/index.ts";

describe("OTLP export settings", () => {
  it("is off unless an endpoint is set", () => {
    expect(otlpExport({}, "svc")).toBeNull();
    expect(otlpExport({ OTEL_EXPORTER_OTLP_ENDPOINT: " ", OTEL_EXPORTER_OTLP_HEADERS: "a=b" }, "svc")).toBeNull();
  });

  it("sends traces to <base>/v1/traces, or to the traces endpoint as it is", () => {
    expect(otlpExport({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:4318" }, "svc")).toEqual({
      url: "http://127.0.0.1:4318/v1/traces",
      headers: {},
      serviceName: "svc",
    });
    expect(otlpExport({ OTEL_EXPORTER_OTLP_ENDPOINT: "https://otel.example/base/" }, "svc")?.url).toBe(
      "https://otel.example/base/v1/traces",
    );
    const both = { OTEL_EXPORTER_OTLP_ENDPOINT: "http://a:1", OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "http://b:2/t" };
    expect(otlpExport({ ...both, OTEL_SERVICE_NAME: "edge-eu" }, "svc")).toMatchObject({
      url: "http://b:2/t",
      serviceName: "edge-eu",
    });
  });

  it("reads headers as key=value pairs with URL-encoded values", () => {
    expect(parseOtlpHeaders("x-honeycomb-team=abc, authorization=Basic%20dXNlcjpwdw%3D%3D,")).toEqual({
      "x-honeycomb-team": "abc",
      authorization: "Basic dXNlcjpwdw==",
    });
    expect(() => parseOtlpHeaders("no-equals-sign")).toThrow(/key=value pairs/);
  });

  it("refuses an endpoint that is not an http(s) URL, naming the variable", () => {
    expect(() => otlpExport({ OTEL_EXPORTER_OTLP_ENDPOINT: "localhost:4318" }, "s")).toThrow(
      /OTEL_EXPORTER_OTLP_ENDPOINT must be/,
    );
    expect(() => otlpExport({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "grpc://x" }, "s")).toThrow(
      /_TRACES_ENDPOINT must be/,
    );
  });
});
