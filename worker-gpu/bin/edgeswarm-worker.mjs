#!/usr/bin/env node
// `npx edgeswarm-worker`: registers tsx so the TypeScript worker runs as it is, without a build step.
import { register } from "tsx/esm/api";

register();
await import("../cli.ts");
