// The Node reference tus server as @tus/server's README sets it up: a standalone server on
// /files with @tus/file-store on disk (defaults). bench/ingest.py copies this file into
// bench/.peers/node (where node_modules is) and runs: node tus_node_server.mjs PORT DIRECTORY
import { Server } from "@tus/server";
import { FileStore } from "@tus/file-store";

const [port, directory] = process.argv.slice(2);
const server = new Server({ path: "/files", datastore: new FileStore({ directory }) });
server.listen({ host: "127.0.0.1", port: Number(port) });
