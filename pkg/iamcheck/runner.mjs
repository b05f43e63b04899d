// fileflow's bridge to the IAM checkers (npm @cloud-copilot/iam-policy and
// @cloud-copilot/iam-simulate), run by pkg/iamcheck with Node 22.
// stdin:  {"validate":[{id,kind,policy}], "simulate":[{id,principal,action,resource,account,identity:[json],resourcePolicy,context}]}
// stdout: {"validate":[{id,findings:[{path,message}]}], "simulate":[{id,result,error}]}
import { validateIdentityPolicy, validateResourcePolicy, validateTrustPolicy } from "@cloud-copilot/iam-policy";
import { runSimulation } from "@cloud-copilot/iam-simulate";

const chunks = [];
for await (const c of process.stdin) chunks.push(c);
const input = JSON.parse(Buffer.concat(chunks).toString("utf8"));

const validators = { trust: validateTrustPolicy, identity: validateIdentityPolicy, resource: validateResourcePolicy };
const out = { validate: [], simulate: [] };

for (const d of input.validate ?? []) {
  const validate = validators[d.kind];
  if (!validate) throw new Error(`unknown policy kind ${JSON.stringify(d.kind)}`);
  let policy;
  try {
    policy = JSON.parse(d.policy);
  } catch (e) {
    out.validate.push({ id: d.id, findings: [{ path: "", message: `not JSON: ${e.message}` }] });
    continue;
  }
  out.validate.push({ id: d.id, findings: validate(policy).map((f) => ({ path: f.path ?? "", message: f.message })) });
}

const parsed = new Map(); // the same policies come with many requests: parse each once
const parse = (doc) => {
  if (!parsed.has(doc)) parsed.set(doc, JSON.parse(doc));
  return parsed.get(doc);
};
for (const r of input.simulate ?? []) {
  const res = await runSimulation(
    {
      identityPolicies: (r.identity ?? []).map((p, i) => ({ name: `identity${i}`, policy: parse(p) })),
      serviceControlPolicies: [],
      resourceControlPolicies: [],
      resourcePolicy: r.resourcePolicy ? parse(r.resourcePolicy) : undefined,
      request: {
        principal: r.principal,
        action: r.action,
        resource: { resource: r.resource, accountId: r.account },
        contextVariables: r.context ?? {},
      },
    },
    {},
  );
  if (res.resultType === "error") {
    out.simulate.push({ id: r.id, result: "Error", error: JSON.stringify(res.errors) });
  } else {
    out.simulate.push({ id: r.id, result: res.overallResult });
  }
}
process.stdout.write(JSON.stringify(out));
