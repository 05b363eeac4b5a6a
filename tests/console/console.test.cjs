// The web console in a real browser: Debian's chromium driven by
// playwright-core, run by node:test. Started by tests/console.rs (cargo test
// -p pullpass-tests --test console), which starts pullpassd, the token issuer
// and docker-registry, and passes their addresses in the environment; it
// then greps the database, WAL and server log for the canaries.
//
// Each step is a subtest, in order: the walk-through (sign in, create a
// workspace, add a GHCR credential for project rnaseq, edit, rotate, test
// against the test registry, import a config.json, mint and revoke a
// LAUNCHER token, the audit page, an identity provider, an identity binding
// and Test a token), then the refusals, the login link, the
// accessibility scans (axe-core) and the leak checks over every page's HTML
// and the browser's network log.
"use strict";
const test = require("node:test");
const assert = require("node:assert/strict");
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run this through cargo test -p pullpass-tests --test console`);
  return value;
};
const modules = env("PULLPASS_NODE_MODULES");
const { chromium } = require(path.join(modules, "playwright-core"));
const axeSource = fs.readFileSync(path.join(modules, "axe-core", "axe.min.js"), "utf8");

const CONSOLE = env("PULLPASS_CONSOLE").replace(/\/$/, "");
const ORIGIN = new URL(CONSOLE).origin;
const ROOT_TOKEN = env("PULLPASS_ROOT_TOKEN");
const REGISTRY = env("PULLPASS_REGISTRY");
const REALM = env("PULLPASS_REALM");
const REGISTRY_USER = env("PULLPASS_REGISTRY_USER");
const REGISTRY_PASSWORD = env("PULLPASS_REGISTRY_PASSWORD");
const GHCR_PAT = env("PULLPASS_GHCR_PAT");
const ROTATED_PAT = env("PULLPASS_ROTATED_PAT");
const IMPORT_PASSWORD = env("PULLPASS_IMPORT_PASSWORD");
const BAD_NAME = env("PULLPASS_BAD_NAME");
const BAD_NAME_ERROR = env("PULLPASS_BAD_NAME_ERROR");
const LOGIN_LINK = env("PULLPASS_LOGIN_LINK");
const SCREENSHOTS = env("PULLPASS_SCREENSHOTS");
const ARTIFACTS = env("PULLPASS_ARTIFACTS");
const CANARIES = [ROOT_TOKEN, REGISTRY_PASSWORD, GHCR_PAT, ROTATED_PAT, IMPORT_PASSWORD, LOGIN_LINK.split("#")[1]];

// What the browser saw: every page's HTML and the network log (request
// URLs and headers, response URLs, headers and bodies). Request bodies are
// left out: a form that sets a secret carries it, by design, once.
const seen = { pages: [], network: [] };
const secrets = new Set(); // tokens shown once by the console: leak-checked after
const CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync"];

let browser;
async function context() {
  const ctx = await browser.newContext({ baseURL: ORIGIN, acceptDownloads: false });
  ctx.setDefaultTimeout(10000);
  ctx.on("request", (request) => {
    seen.network.push(`> ${request.method()} ${request.url()} ${JSON.stringify(request.headers())}`);
  });
  ctx.on("response", async (response) => {
    let body = "";
    try { body = await response.text(); } catch { /* redirects have none */ }
    seen.network.push(`< ${response.status()} ${response.url()} ${JSON.stringify(await response.allHeaders())}\n${body}`);
  });
  return ctx;
}

async function keep(page) {
  seen.pages.push({ url: page.url(), html: await page.content() });
}

async function axe(page, name) {
  await page.evaluate(axeSource);
  const results = await page.evaluate(() => window.axe.run(document, { resultTypes: ["violations"] }));
  const bad = results.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  assert.deepEqual(bad.map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(" ")).join(", ")})`), [],
    `axe-core on ${name}`);
}

async function signIn(page, token) {
  await page.goto("/console/login");
  await page.getByLabel("Access token", { exact: true }).fill(token);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.waitForLoadState("load");
}

async function csrfOf(page) {
  return page.locator('input[name="csrf"]').first().inputValue();
}

// A form POST the way a forger would send it: from the page's own context
// (its cookie), with fields of our choosing.
async function forge(page, url, fields) {
  return page.evaluate(async ({ url, fields }) => {
    const body = new URLSearchParams(fields);
    const response = await fetch(url, { method: "POST", body, redirect: "manual" });
    return { status: response.status, text: await response.text() };
  }, { url, fields });
}

test.before(async () => {
  browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: CHROMIUM_FLAGS });
});
test.after(async () => { await browser?.close(); });

test("the console", async (t0) => {
  // Steps build on each other: after a failure, the rest are skipped.
  let failed = false;
  const t = {
    test: (name, fn) => t0.test(name, { skip: failed ? "an earlier step failed" : false }, async (...args) => {
      try { await fn(...args); } catch (error) { failed = true; throw error; }
    }),
  };
  const admin = await context();
  const page = await admin.newPage();
  let viewerToken;

  await t.test("a visitor is sent to the sign-in page, which has a labelled token field", async () => {
    await page.goto("/console/");
    assert.match(page.url(), /\/console\/login$/);
    await keep(page);
    await axe(page, "sign-in");
    const field = page.getByLabel("Access token", { exact: true });
    assert.equal(await field.getAttribute("type"), "password");
    assert.equal(await field.getAttribute("autocomplete"), "off");
    const response = await page.request.get("/console/login");
    const headers = response.headers();
    assert.match(headers["content-security-policy"], /default-src 'self'/);
    assert.match(headers["content-security-policy"], /frame-ancestors 'none'/);
    assert.doesNotMatch(headers["content-security-policy"], /unsafe-inline/);
    assert.equal(headers["x-content-type-options"], "nosniff");
    assert.equal(headers["referrer-policy"], "no-referrer");
  });

  await t.test("a wrong token is refused next to the field", async () => {
    await signIn(page, "pp_" + "Z".repeat(43));
    await keep(page);
    assert.match(page.url(), /\/console\/login$/);
    const error = page.locator("#token-error");
    assert.match(await error.innerText(), /unknown access token/);
    assert.equal(await page.getByLabel("Access token", { exact: true }).getAttribute("aria-describedby"), "token-hint token-error");
  });

  await t.test("ROOT signs in and lands on the workspace list", async () => {
    await signIn(page, ROOT_TOKEN);
    assert.match(page.url(), /\/console\/workspaces$/);
    const cookies = await admin.cookies();
    const session = cookies.find((c) => c.name === "pullpass_session");
    assert.ok(session, "a session cookie");
    assert.equal(session.httpOnly, true);
    assert.equal(session.sameSite, "Strict");
    await keep(page);
    await axe(page, "workspaces");
  });

  await t.test("ROOT creates a workspace, linked from the list by its id", async () => {
    await page.getByLabel("Workspace id", { exact: true }).fill("acme");
    await page.getByLabel("Kind", { exact: true }).selectOption("ORGANIZATION");
    await page.getByLabel("Display name", { exact: true }).fill("Acme Research");
    await page.getByRole("button", { name: "Create workspace" }).click();
    await page.waitForURL(/\/console\/workspaces\/acme\/credentials$/);
    await page.goto("/console/workspaces");
    await page.getByRole("link", { name: "acme", exact: true }).click();
    await page.waitForURL(/\/console\/workspaces\/acme\/credentials$/);
    await keep(page);
  });

  await t.test("a bad name gets the API's field error next to Name", async () => {
    await page.getByRole("link", { name: "Add credential" }).click();
    await page.getByLabel("Name", { exact: true }).fill(BAD_NAME);
    await page.getByLabel("Provider", { exact: true }).selectOption("GHCR");
    await page.getByLabel("User name", { exact: true }).fill("octocat");
    await page.getByLabel("Password", { exact: true }).fill(GHCR_PAT);
    await page.getByRole("button", { name: "Add credential" }).click();
    await page.waitForLoadState("load");
    await keep(page);
    const name = page.getByLabel("Name", { exact: true });
    const describedBy = (await name.getAttribute("aria-describedby")).split(" ");
    assert.ok(describedBy.includes("name-error"), describedBy.join(" "));
    assert.equal(await page.locator("#name-error").innerText(), BAD_NAME_ERROR);
    assert.equal(await page.getByLabel("Password", { exact: true }).inputValue(), "", "the secret is never sent back");
  });

  await t.test("the Add form has exactly the expected fields, and Docker Hub, GHCR and Quay fill in their registry", async () => {
    await page.goto("/console/workspaces/acme/add");
    for (const label of ["Name", "Provider", "User name", "Password", "Registry server", "Restrict to projects",
      "Projects", "Allow passthrough", "Secret expires on", "Description", "Role ARN", "External id", "Tenant id", "Client id",
      "Workload identity provider", "Service account", "Robot"]) {
      assert.equal(await page.getByLabel(label, { exact: true }).count(), 1, label);
    }
    assert.equal(await page.getByLabel("Restrict to projects", { exact: true }).getAttribute("type"), "checkbox");
    assert.equal(await page.getByLabel("Secret expires on", { exact: true }).getAttribute("type"), "date");
    assert.equal(await page.getByLabel("Password", { exact: true }).getAttribute("type"), "password");
    assert.equal(await page.getByLabel("Password", { exact: true }).getAttribute("autocomplete"), "off");
    assert.match(await page.locator("#registry_server-hint").innerText(), /https:\/\/ is removed/);
    const registry = page.getByLabel("Registry server", { exact: true });
    for (const [provider, server] of [["DOCKER_HUB", "docker.io"], ["GHCR", "ghcr.io"], ["QUAY", "quay.io"]]) {
      await page.getByLabel("Provider", { exact: true }).selectOption(provider);
      assert.equal(await registry.inputValue(), server, provider);
    }
    await axe(page, "add form");
    await page.screenshot({ path: path.join(SCREENSHOTS, "add-credential.png"), fullPage: true });
  });

  await t.test("a GHCR credential restricted to project rnaseq is added and listed", async () => {
    await page.getByLabel("Name", { exact: true }).fill("ghcr");
    await page.getByLabel("Provider", { exact: true }).selectOption("GHCR");
    await page.getByLabel("User name", { exact: true }).fill("octocat");
    await page.getByLabel("Password", { exact: true }).fill(GHCR_PAT);
    await page.getByLabel("Restrict to projects", { exact: true }).check();
    await page.getByLabel("Projects", { exact: true }).fill("rnaseq");
    await page.getByLabel("Description", { exact: true }).fill("CI pulls");
    // The PAT expires in ten days (and a half, so no clock edge rounds it).
    const expires = new Date(Date.now() + 10.5 * 86400e3).toISOString().slice(0, 10);
    await page.getByLabel("Secret expires on", { exact: true }).fill(expires);
    await page.getByRole("button", { name: "Add credential" }).click();
    await page.waitForURL(/\/credentials\/ghcr$/);
    assert.equal(await page.getByLabel("Secret expires on", { exact: true }).inputValue(), expires, "the date is kept");
    await keep(page);
    await axe(page, "edit form");
    await page.goto("/console/workspaces/acme/credentials");
    const row = page.getByRole("row").filter({ hasText: "ghcr.io" });
    const cells = await row.getByRole("cell").allInnerTexts();
    assert.deepEqual(cells.slice(0, 6), ["ghcr", "GHCR", "ghcr.io", "octocat", "rnaseq", "1"]);
    assert.match(cells[6], /^expires in (9|10) days$/, "the health badge");
    assert.equal(cells[7], "never", "not used yet");
    assert.equal(await page.getByRole("img", { name: /leases in the last 24 hours/ }).count(), 1, "the chart");
    await page.getByRole("link", { name: /Needs attention \(1\)/ }).click();
    assert.equal(await page.getByRole("row").filter({ hasText: "ghcr.io" }).count(), 1, "it needs attention");
    await page.goto("/console/workspaces/acme/credentials");
    await keep(page);
    await axe(page, "credential list");
  });

  await t.test("a keyless ECR role is added without a password and listed as keyless; a bad ARN is a field error", async () => {
    await page.goto("/console/workspaces/acme/add");
    await page.getByLabel("Name", { exact: true }).fill("ecr-role");
    await page.getByLabel("Provider", { exact: true }).selectOption("ECR");
    await page.getByLabel("Registry server", { exact: true }).fill("123456789012.dkr.ecr.eu-west-1.amazonaws.com");
    await page.getByLabel("Role ARN", { exact: true }).fill("arn:aws:iam::123456789012:user/nope");
    await page.getByLabel("Assume it with pullpass's own OIDC token (no AWS key anywhere)", { exact: true }).check();
    await page.getByRole("button", { name: "Add credential" }).click();
    await page.waitForLoadState("load");
    assert.match(await page.locator("#role_arn-error").innerText(), /IAM role ARN/);
    assert.ok((await page.getByLabel("Role ARN", { exact: true }).getAttribute("aria-describedby")).includes("role_arn-error"));
    await page.getByLabel("Role ARN", { exact: true }).fill("arn:aws:iam::123456789012:role/pullpass-pull");
    await page.getByRole("button", { name: "Add credential" }).click();
    await page.waitForURL(/\/credentials\/ecr-role$/);
    assert.match(await page.locator("#secret-version").innerText(), /keyless/);
    assert.equal(await page.getByLabel("Role ARN", { exact: true }).inputValue(), "arn:aws:iam::123456789012:role/pullpass-pull");
    await axe(page, "keyless credential");
    await page.goto("/console/workspaces/acme/credentials");
    const row = page.getByRole("row").filter({ hasText: "ecr-role" });
    assert.match((await row.getByRole("cell").allInnerTexts())[5], /keyless/);
  });

  await t.test("editing the description keeps the secret; filling the password rotates it", async () => {
    await page.getByRole("link", { name: "ghcr", exact: true }).click();
    assert.equal(await page.getByLabel("Password", { exact: true }).inputValue(), "", "the secret is never prefilled");
    await page.getByLabel("Description", { exact: true }).fill("CI pulls for rnaseq");
    await page.getByRole("button", { name: "Save" }).click();
    await page.waitForLoadState("load");
    assert.equal(await page.locator("#secret-version").innerText(), "1");
    assert.equal(await page.getByLabel("Description", { exact: true }).inputValue(), "CI pulls for rnaseq");
    await page.getByLabel("Password", { exact: true }).fill(ROTATED_PAT);
    await page.getByRole("button", { name: "Save" }).click();
    await page.waitForLoadState("load");
    assert.equal(await page.locator("#secret-version").innerText(), "2");
    assert.equal(await page.getByLabel("Password", { exact: true }).inputValue(), "");
    await keep(page);
  });

  await t.test("Test shows the typed reason, then the granted scope, against the test registry", async () => {
    await page.goto("/console/workspaces/acme/add");
    await page.getByLabel("Name", { exact: true }).fill("registry");
    await page.getByLabel("Provider", { exact: true }).selectOption("GENERIC");
    await page.getByLabel("User name", { exact: true }).fill(REGISTRY_USER);
    await page.getByLabel("Password", { exact: true }).fill(REGISTRY_PASSWORD);
    await page.getByLabel("Registry server", { exact: true }).fill(`http://${REGISTRY}`);
    await page.getByRole("button", { name: "Add credential" }).click();
    await page.waitForURL(/\/credentials\/registry$/);
    // The realm is on another host: refused until it is allowed.
    await page.getByLabel("Repository to test", { exact: true }).fill("team/app");
    await page.getByLabel("Description", { exact: true }).fill("typed while testing");
    await page.getByRole("button", { name: "Test" }).click();
    await page.waitForLoadState("load");
    assert.match(await page.locator("#test-result").innerText(), /realm not allowed/);
    assert.equal(await page.getByLabel("Description", { exact: true }).inputValue(), "typed while testing", "the open form keeps its input");
    await page.getByLabel("Token realms", { exact: true }).fill(REALM);
    await page.getByRole("button", { name: "Save" }).click();
    await page.waitForLoadState("load");
    await page.getByLabel("Repository to test", { exact: true }).fill("team/app");
    await page.getByRole("button", { name: "Test" }).click();
    await page.waitForLoadState("load");
    assert.match(await page.locator("#test-result").innerText(), /Test passed/);
    assert.equal(await page.locator("#granted-scope").innerText(), "repository:team/app:pull");
    await keep(page);
  });

  await t.test("a docker config.json is imported, with a result per entry", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "pullpass-console-"));
    const file = path.join(dir, "config.json");
    const auth = Buffer.from(`robot:${IMPORT_PASSWORD}`).toString("base64");
    fs.writeFileSync(file, JSON.stringify({ auths: { "quay.io": { auth }, "https://index.docker.io/v1/": { auth: "bm90LWEtcGFpcg==" } } }));
    await page.goto("/console/workspaces/acme/import");
    await axe(page, "import");
    await page.getByLabel("Docker config.json", { exact: true }).setInputFiles(file);
    await page.getByRole("button", { name: "Import" }).click();
    await page.waitForLoadState("load");
    const rows = await page.locator("#import-results tbody tr").allInnerTexts();
    assert.equal(rows.length, 2, rows.join("\n"));
    assert.ok(rows.some((r) => r.includes("quay.io") && r.includes("Created imported-quay-io")), rows.join("\n"));
    assert.ok(rows.some((r) => r.includes("index.docker.io") && r.includes("Not imported")), rows.join("\n"));
    await keep(page);
    fs.rmSync(dir, { recursive: true });
  });

  await t.test("a LAUNCHER token is minted, shown once with a copy button, and revoked", async () => {
    await page.goto("/console/workspaces/acme/tokens");
    await page.getByLabel("Role", { exact: true }).selectOption("LAUNCHER");
    await page.getByLabel("Projects", { exact: true }).fill("rnaseq");
    await page.getByLabel("Description", { exact: true }).fill("launcher of the walk-through");
    await page.getByRole("button", { name: "Create token" }).click();
    await page.waitForLoadState("load");
    const token = await page.getByLabel("New token", { exact: true }).inputValue();
    assert.match(token, /^pp_[A-Za-z0-9]{43}$/);
    secrets.add(token);
    assert.equal(await page.getByRole("button", { name: "Copy" }).count(), 1);
    await axe(page, "tokens");
    await page.goto("/console/workspaces/acme/tokens");
    assert.equal(await page.getByLabel("New token", { exact: true }).count(), 0, "shown once");
    const row = page.getByRole("row").filter({ hasText: "launcher of the walk-through" });
    await row.getByRole("button", { name: /Revoke/ }).click();
    await page.waitForLoadState("load");
    assert.match(await page.getByRole("row").filter({ hasText: "launcher of the walk-through" }).innerText(), /revoked/);
    // A VIEWER token for the refusals below.
    await page.getByLabel("Role", { exact: true }).selectOption("VIEWER");
    await page.getByLabel("Projects", { exact: true }).fill("");
    await page.getByLabel("Description", { exact: true }).fill("viewer of the walk-through");
    await page.getByRole("button", { name: "Create token" }).click();
    await page.waitForLoadState("load");
    viewerToken = await page.getByLabel("New token", { exact: true }).inputValue();
    secrets.add(viewerToken);
    await keep(page);
  });

  await t.test("the audit page shows the events and the chain check", async () => {
    await page.goto("/console/workspaces/acme/audit");
    const actions = await page.locator("tbody tr td:nth-child(4)").allInnerTexts();
    for (const action of ["CreateCredential", "UpdateCredential", "TestCredential", "ImportDockerConfig",
      "CreateAccessToken", "RevokeAccessToken"]) {
      assert.ok(actions.includes(action), `${action} in ${actions.join(", ")}`);
    }
    await page.getByLabel("Action", { exact: true }).fill("UpdateCredential");
    await page.getByRole("button", { name: "Filter" }).click();
    await page.waitForLoadState("load");
    const filtered = await page.locator("tbody tr td:nth-child(4)").allInnerTexts();
    assert.ok(filtered.length >= 3 && filtered.every((a) => a === "UpdateCredential"), filtered.join(", "));
    await page.getByRole("button", { name: "Check chain" }).click();
    await page.waitForLoadState("load");
    assert.match(await page.locator("#chain-check").innerText(), /intact/);
    await keep(page);
    await axe(page, "audit");
  });

  await t.test("ROOT adds an identity provider through the form, with discovery, RS256 and ES256 chosen by default", async () => {
    await page.getByRole("link", { name: "Identity providers", exact: true }).click();
    await page.waitForURL(/\/console\/identityProviders$/);
    await axe(page, "identity providers");
    await page.getByLabel("Provider id", { exact: true }).fill("cluster-a");
    await page.getByLabel("Issuer", { exact: true }).fill("https://kubernetes.example.test");
    assert.equal(await page.getByLabel(/^OIDC discovery/).isChecked(), true);
    for (const algorithm of ["RS256", "ES256"]) {
      assert.equal(await page.getByLabel(algorithm, { exact: true }).isChecked(), true, algorithm);
    }
    assert.equal(await page.getByLabel("PS256", { exact: true }).isChecked(), false);
    assert.equal(await page.getByLabel("HS256", { exact: true }).count(), 0, "HMAC is never offered");
    await page.getByLabel("Audiences", { exact: true }).fill("pullpass\nsecond-audience");
    await page.getByRole("button", { name: "Add identity provider" }).click();
    await page.waitForURL(/\/console\/identityProviders\/cluster-a$/);
    await keep(page);
    await axe(page, "identity provider");
  });

  await t.test("ADMIN pages: a binding is added, and Test a token answers without showing the token", async () => {
    await page.goto("/console/workspaces/acme/credentials");
    await page.getByRole("link", { name: "Identity bindings", exact: true }).click();
    await page.waitForURL(/\/workspaces\/acme\/identityBindings$/);
    await axe(page, "identity bindings");
    await page.getByLabel("Binding id", { exact: true }).fill("ci");
    await page.getByLabel("Identity provider", { exact: true }).selectOption("identityProviders/cluster-a");
    await page.getByLabel("Bound claims", { exact: true }).fill("/kubernetes.io/namespace = ci\nsub = system:serviceaccount:ci:*");
    await page.getByLabel("Role", { exact: true }).selectOption("LAUNCHER");
    await page.getByLabel("Projects", { exact: true }).fill("rnaseq");
    await page.getByRole("button", { name: "Add binding" }).click();
    await page.waitForURL(/\/identityBindings\/ci$/);
    await keep(page);
    await axe(page, "identity binding");
    await page.getByRole("link", { name: "Test a token" }).click();
    await page.waitForURL(/\/test-identity-token$/);
    await axe(page, "test a token");
    // JWT-shaped, of an issuer nobody trusts: refused without a fetch.
    const part = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
    const jwt = `${part({ alg: "RS256", kid: "k1" })}.${part({ iss: "https://nobody.example.test", sub: "x", aud: "pullpass" })}.${"A".repeat(43)}`;
    secrets.add(jwt);
    await page.getByLabel("Token (JWT)", { exact: true }).fill(jwt);
    await page.getByRole("button", { name: "Test token" }).click();
    await page.waitForLoadState("load");
    assert.match(await page.locator("#identity-test").innerText(), /refused: the identity token's issuer is not a known identity provider/);
    assert.equal(await page.getByLabel("Token (JWT)", { exact: true }).inputValue(), "", "the token is not put back");
    assert.doesNotMatch(page.url(), /eyJ/);
    await keep(page);
    await axe(page, "test a token, answered");
  });

  await t.test("deleting asks for confirmation", async () => {
    await page.goto("/console/workspaces/acme/credentials/imported-quay-io");
    await page.getByRole("link", { name: "Delete" }).click();
    await page.waitForURL(/\/delete$/);
    await axe(page, "delete confirmation");
    await page.getByRole("button", { name: "Delete" }).click();
    await page.waitForURL(/\/workspaces\/acme\/credentials$/);
    assert.equal(await page.getByRole("link", { name: "imported-quay-io" }).count(), 0);
    await page.screenshot({ path: path.join(SCREENSHOTS, "credentials.png"), fullPage: true });
    await keep(page);
  });

  await t.test("a POST without the CSRF token is refused", async () => {
    const refused = await forge(page, "/console/workspaces/acme/credentials/registry/delete", {});
    assert.equal(refused.status, 403);
    assert.match(refused.text, /CSRF/);
    const wrong = await forge(page, "/console/workspaces/acme/credentials/registry/delete", { csrf: "00".repeat(32) });
    assert.equal(wrong.status, 403);
    await page.goto("/console/workspaces/acme/credentials");
    assert.equal(await page.getByRole("link", { name: "registry", exact: true }).count(), 1, "nothing was deleted");
  });

  const viewer = await context();
  const viewerPage = await viewer.newPage();
  await t.test("a VIEWER sees no Add button, and its forged POST gets 403", async () => {
    await signIn(viewerPage, viewerToken);
    assert.match(viewerPage.url(), /\/console\/workspaces\/acme\/credentials$/);
    assert.equal(await viewerPage.getByRole("link", { name: "Add credential" }).count(), 0);
    assert.equal(await viewerPage.getByRole("link", { name: "Access tokens" }).count(), 0);
    assert.equal(await viewerPage.getByRole("cell", { name: "ghcr", exact: true }).count(), 1, "but sees the list");
    await keep(viewerPage);
    const csrf = await csrfOf(viewerPage);
    const forged = await forge(viewerPage, "/console/workspaces/acme/credentials",
      { csrf, name: "forged", provider: "GHCR", username: "x", password: "forged-secret" });
    assert.equal(forged.status, 403, forged.text);
    const page403 = await viewerPage.goto("/console/workspaces/acme/add");
    assert.equal(page403.status(), 403);
  });

  await t.test("a cookie of a revoked token no longer works", async () => {
    await page.goto("/console/workspaces/acme/tokens");
    const row = page.getByRole("row").filter({ hasText: "viewer of the walk-through" });
    await row.getByRole("button", { name: /Revoke/ }).click();
    await page.waitForLoadState("load");
    await viewerPage.goto("/console/workspaces/acme/credentials");
    assert.match(viewerPage.url(), /\/console\/login$/);
  });

  await t.test("a one-time login link signs in once, and its code never reaches a server", async () => {
    const linked = await context();
    const linkedPage = await linked.newPage();
    await linkedPage.goto(LOGIN_LINK);
    await linkedPage.waitForURL(/\/console\/workspaces$/);
    assert.doesNotMatch(linkedPage.url(), /ppl_/);
    await keep(linkedPage);
    const again = await context();
    const againPage = await again.newPage();
    await againPage.goto(LOGIN_LINK);
    await againPage.waitForLoadState("load");
    assert.match(againPage.url(), /\/console\/login$/);
    assert.match(await againPage.locator("#token-error").innerText(), /used already or has expired/);
    await keep(againPage);
    await linked.close();
    await again.close();
  });

  await t.test("signing out ends the session", async () => {
    await page.getByRole("button", { name: "Sign out" }).click();
    await page.waitForURL(/\/console\/login$/);
    await page.goto("/console/workspaces");
    assert.match(page.url(), /\/console\/login$/);
  });

  await t.test("no secret appears in any page, URL or answer the browser saw", async () => {
    assert.ok(seen.pages.length > 15, `pages kept: ${seen.pages.length}`);
    for (const secret of [...CANARIES, ...secrets]) {
      for (const { url, html } of seen.pages) {
        assert.ok(!html.includes(secret) || isTheMintingPage(html, secret), `a secret in the HTML of ${url}`);
        assert.ok(!url.includes(secret), `a secret in the URL ${url}`);
      }
      for (const entry of seen.network) {
        assert.ok(!entry.includes(secret) || isTheMintingPage(entry, secret),
          `a secret in the network log: ${entry.slice(0, 200)}`);
      }
    }
    fs.writeFileSync(path.join(ARTIFACTS, "network.log"), seen.network.join("\n"));
  });

  await viewer.close();
  await admin.close();
});

// A minted token is in the one answer that creates it (the token page
// right after "Create token"), and nowhere else.
function isTheMintingPage(text, secret) {
  return secrets.has(secret) && text.includes('id="new-token"') && text.split(secret).length === 2;
}
