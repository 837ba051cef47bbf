// The Node reference tus server with its S3 store, as @tus/s3-store's README sets it up: a
// standalone @tus/server on /files and S3Store with an 8 MiB part size, here pointed at the
// bench's Swift (path-style, its region and keys from the environment bench/ingest.py sets).
//   node tus_node_s3_server.mjs PORT   (S3_ENDPOINT, S3_BUCKET, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)
import { Server } from "@tus/server";
import { S3Store } from "@tus/s3-store";

const [port] = process.argv.slice(2);
const datastore = new S3Store({
  partSize: 8 * 1024 * 1024,
  s3ClientConfig: {
    bucket: process.env.S3_BUCKET,
    region: process.env.AWS_REGION || "us-east-1",
    endpoint: process.env.S3_ENDPOINT,
    forcePathStyle: true,
    // as for vidgate's botocore: checksums only where S3 requires them. The SDK's default since
    // 2025 (CRC32 in aws-chunked trailers) is not understood by Swift 2.30's s3api (every
    // UploadPart failed: "An error was encountered in a non-retryable streaming request.")
    requestChecksumCalculation: "WHEN_REQUIRED",
    responseChecksumValidation: "WHEN_REQUIRED",
    credentials: { accessKeyId: process.env.AWS_ACCESS_KEY_ID, secretAccessKey: process.env.AWS_SECRET_ACCESS_KEY },
  },
});
const server = new Server({ path: "/files", datastore });
server.listen({ host: "127.0.0.1", port: Number(port) });
