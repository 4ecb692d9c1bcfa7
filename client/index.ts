// What client/ offers callers as a library: the SDK (client/sdk/). The embed script and the donor worker
// are built as separate bundles by scripts/build-client.ts and are not imported from here.
export * from "./sdk/index.ts";
