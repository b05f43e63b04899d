// Starts fauxqs (the SQS emulator) on 127.0.0.1 only; its CLI binds 0.0.0.0.
// Usage: node fauxqs-server.mjs PORT
import { buildApp } from "fauxqs";

const port = Number(process.argv[2]);
if (!Number.isInteger(port) || port <= 0) {
  console.error("usage: fauxqs-server.mjs PORT");
  process.exit(2);
}
const app = buildApp({ logger: false, host: "127.0.0.1" });
await app.listen({ port, host: "127.0.0.1" });
console.log(`fileflow: fauxqs listening on 127.0.0.1:${port}`);
for (const sig of ["SIGTERM", "SIGINT"]) {
  process.on(sig, async () => {
    await app.close();
    process.exit(0);
  });
}
