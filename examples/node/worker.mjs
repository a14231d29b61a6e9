// A job worker in plain Node.js (18+), over the jobs server's lease API: no package needed.
// Usage: JOB_SCHEDULER_URL=http://localhost:3013 ORCHESTRA_TOKEN=... node worker.mjs
const base = process.env.JOB_SCHEDULER_URL ?? "http://localhost:3013";
const headers = { "content-type": "application/json" };
if (process.env.ORCHESTRA_TOKEN) headers.authorization = `Bearer ${process.env.ORCHESTRA_TOKEN}`;
const worker = `pricing-node-${process.pid}`;

const handlers = {
  "price-calculation": async (data) => ({ stationId: data.stationId, total: 7.45 }),
};

async function call(path, body) {
  const res = await fetch(`${base}${path}`, { method: "POST", headers, body: JSON.stringify(body) });
  if (!res.ok) throw new Error(`${path}: ${res.status} ${await res.text()}`);
  return res.json();
}

while (true) {
  const { jobs } = await call("/jobs/lease", {
    worker, types: Object.keys(handlers), max: 10, leaseMs: 30000, waitMs: 5000,
  });
  await Promise.all(jobs.map(async ({ job, token }) => {
    try {
      const result = await handlers[job.type](job.data);
      await call(`/jobs/${job.id}/complete`, { token, result });
    } catch (err) {
      await call(`/jobs/${job.id}/fail`, { token, error: String(err) }).catch(() => {});
    }
  }));
}
