// One full flow against collection-svc from Node.js, with @grpc/grpc-js and the contracts
// loaded at run time from ../../proto by @grpc/proto-loader (nothing hand-written):
// CreateAuthorization, the payer authorizes in the WeChat sandbox, GetAuthorization until the
// bill is issued; then an invalid request, and how its google.rpc error details read
// (google/rpc/*.proto from the google-proto-files package, decoded with protobufjs).
//
// usage: node flow.cjs [--collection 127.0.0.1:50051] [--sandbox http://127.0.0.1:8900]
//                      [--order-id ID] [--api-key KEY]

const path = require("node:path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");
const protobuf = require("protobufjs");
const googleProtos = require("google-proto-files");

const UNIT = "wxc0000000000000c1";
const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, value, i, all) => (i % 2 === 0 ? [...pairs, [value.replace(/^--/, ""), all[i + 1]]] : pairs), []),
);
const collectionAddress = args.collection || "127.0.0.1:50051";
const sandbox = args.sandbox || "http://127.0.0.1:8900";
const orderId = args["order-id"] || `node-${Date.now()}`;

const { fiscalbill } = grpc.loadPackageDefinition(
  protoLoader.loadSync("fiscalbill/collection/v1/collection.proto", {
    includeDirs: [path.join(__dirname, "../../proto")],
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
  }),
);

// google.rpc.Status and its details (ErrorInfo, BadRequest, RetryInfo, ...).
const rpc = new protobuf.Root();
rpc.resolvePath = (_origin, target) => path.join(googleProtos.getProtoPath(), "..", target);
rpc.loadSync(["google/rpc/status.proto", "google/rpc/error_details.proto"], { keepCase: true });
const Status = rpc.lookupType("google.rpc.Status");

/// The ErrorInfo reason and the BadRequest field names of a failed call.
function errorDetails(error) {
  const [bytes] = error.metadata.get("grpc-status-details-bin");
  const details = { reason: "", fields: [] };
  if (!bytes) return details;
  for (const any of Status.decode(bytes).details) {
    const type = rpc.lookupType(any.type_url.slice(any.type_url.lastIndexOf("/") + 1));
    const detail = type.decode(any.value);
    if (type.fullName === ".google.rpc.ErrorInfo") details.reason = detail.reason;
    if (type.fullName === ".google.rpc.BadRequest") details.fields = detail.field_violations.map((v) => v.field);
  }
  return details;
}

function call(client, method, request) {
  const metadata = new grpc.Metadata();
  if (args["api-key"]) metadata.set("authorization", `Bearer ${args["api-key"]}`);
  return new Promise((resolve, reject) =>
    client[method](request, metadata, { deadline: Date.now() + 10_000 }, (error, answer) => (error ? reject(error) : resolve(answer))),
  );
}

async function authorizeInSandbox(authUrl) {
  // The payer presses Authorize on the page behind auth_url (the sandbox's control API).
  const answer = await fetch(`${sandbox}/sandbox/authorize`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ auth_url: authUrl, wait: true }),
  });
  const { push } = await answer.json();
  console.log(`payer authorized; WeChat's push was answered ${push.attempts[0].outcome}`);
}

async function main() {
  const client = new fiscalbill.collection.v1.CollectionService(collectionAddress, grpc.credentials.createInsecure());
  const fee = 2300;
  const now = Math.floor(Date.now() / 1000);
  const { authorization: created } = await call(client, "CreateAuthorization", {
    unit_appid: UNIT,
    order_id: orderId,
    money: String(fee),
    source: "SOURCE_WEB",
    bill: {
      fee: String(fee),
      payer_title: "王五",
      billing_no: "44010125",
      billing_code: String(Date.now() % 10_000_000_000).padStart(10, "0"),
      billing_time: { seconds: String(now), nanos: 0 },
      items: [{ name: "门诊诊查费", quantity: "1", unit: "次", unit_price: String(fee), amount: String(fee) }],
    },
  });
  console.log(`order ${created.order_id}: ${created.state}, auth_url ${created.auth_url}`);

  await authorizeInSandbox(created.auth_url);
  const deadline = Date.now() + 30_000;
  for (;;) {
    const { authorization } = await call(client, "GetAuthorization", { unit_appid: UNIT, order_id: orderId });
    if (authorization.state === "AUTHORIZATION_STATE_ISSUED") {
      console.log(`bill issued: card_id ${authorization.card_id}, card code ${authorization.card_code}`);
      break;
    }
    if (authorization.state === "AUTHORIZATION_STATE_ISSUE_FAILED" || Date.now() > deadline) {
      throw new Error(`not issued: ${JSON.stringify(authorization)}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }

  try {
    await call(client, "CreateAuthorization", { unit_appid: "nope", order_id: "", money: "0" });
    throw new Error("an invalid request was accepted");
  } catch (error) {
    if (!error.metadata) throw error;
    const { reason, fields } = errorDetails(error);
    console.log(`invalid request: ${grpc.status[error.code]}, reason ${reason}, fields ${fields.join(", ")}`);
    const expected = ["bill", "money", "order_id", "source", "unit_appid"];
    if (error.code !== grpc.status.INVALID_ARGUMENT || reason !== "INVALID_ARGUMENT" || [...fields].sort().join() !== expected.join()) {
      process.exitCode = 1;
    }
  }
  client.close();
}

main().catch((error) => {
  console.error(error);
  process.exitCode = 1;
});
