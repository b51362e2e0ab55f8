// Copy the browser libraries the page and /docs use into the Python package, with their
// licences: Leaflet (BSD-2-Clause) and Swagger UI (Apache-2.0) allow redistribution with
// their notices kept. Run after `npm ci`; commit what it writes.
import { cpSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const vendor = join(here, "..", "terramask", "server", "static", "vendor");
const libraries = {
  leaflet: {
    files: ["dist/leaflet.js", "dist/leaflet.css", "dist/images", "LICENSE"],
  },
  "swagger-ui-dist": {
    folder: "swagger-ui",
    files: ["swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png", "LICENSE", "NOTICE"],
  },
};

rmSync(vendor, { recursive: true, force: true });
const versions = {};
for (const [name, { folder = name, files }] of Object.entries(libraries)) {
  const source = join(here, "node_modules", name);
  const target = join(vendor, folder);
  mkdirSync(target, { recursive: true });
  for (const file of files) {
    const to = join(target, file.replace(/^dist\//, ""));
    cpSync(join(source, file), to, { recursive: true });
  }
  const pkg = JSON.parse(readFileSync(join(source, "package.json"), "utf8"));
  versions[name] = { version: pkg.version, license: pkg.license, folder };
}
writeFileSync(join(vendor, "VERSIONS.json"), JSON.stringify(versions, null, 2) + "\n");
console.log("vendored", versions);
