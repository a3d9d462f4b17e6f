// k8s-strict.mjs: offline validation of seam's Kubernetes manifests.
//
// usage: node k8s-strict.mjs FILE.yaml ...     (exit 0 all valid, 1 invalid, 2 usage)
//
// No cluster is needed. Each YAML document is checked by:
//  1. the JSON schemas of npm kubernetes-models (types, required fields, patterns),
//     and @kubernetes-models/prometheus-operator for the PodMonitor CRD;
//  2. an unknown-field walker over @kubernetes/client-node's model type maps
//     (kubernetes-models does not reject unknown fields; a typo such as
//     terminationGracePeriodSecond must fail);
//  3. a small structural check of our own for CRDs and Kustomization files,
//     whose models carry no field list;
//  4. API-server rules the schemas lack (enums, cross-field references):
//     native-sidecar restartPolicy, probe ports, downward-API field paths,
//     volume mounts naming a volume, selectors matching template labels.
// Recipe: ECOSYSTEM.md section 4. Pinned versions: package-lock.json.
import { existsSync, readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { parseAllDocuments } from "yaml";
import * as k8s from "@kubernetes/client-node/dist/gen/models/all.js"; // models only (Node 20)

const CRD_PACKAGES = {
  "monitoring.coreos.com": "@kubernetes-models/prometheus-operator/monitoring.coreos.com",
};

// Field allow-lists for documents without a client-node model. Nested objects
// are described by nested specs; "*" means any value; [spec] is an array of it.
const LABEL_SELECTOR = { matchLabels: "*", matchExpressions: "*" };
const METADATA = { name: "*", namespace: "*", labels: "*", annotations: "*" };
const STRUCT = {
  "monitoring.coreos.com/v1/PodMonitor": {
    apiVersion: "*", kind: "*", metadata: METADATA,
    spec: {
      jobLabel: "*", podTargetLabels: "*", selector: LABEL_SELECTOR, selectorMechanism: "*",
      namespaceSelector: { any: "*", matchNames: "*" },
      sampleLimit: "*", targetLimit: "*", labelLimit: "*", labelNameLengthLimit: "*",
      labelValueLengthLimit: "*", keepDroppedTargets: "*", attachMetadata: "*",
      scrapeProtocols: "*", fallbackScrapeProtocol: "*", scrapeClass: "*", bodySizeLimit: "*",
      scrapeClassicHistograms: "*", nativeHistogramBucketLimit: "*",
      nativeHistogramMinBucketFactor: "*", convertClassicHistogramsToNHCB: "*",
      podMetricsEndpoints: [{
        port: "*", portNumber: "*", targetPort: "*", path: "*", scheme: "*", params: "*",
        interval: "*", scrapeTimeout: "*", honorLabels: "*", honorTimestamps: "*",
        trackTimestampsStaleness: "*", metricRelabelings: "*", relabelings: "*",
        proxyUrl: "*", enableHttp2: "*", filterRunning: "*", followRedirects: "*",
        tlsConfig: "*", basicAuth: "*", bearerTokenSecret: "*", authorization: "*",
        oauth2: "*", noProxy: "*", proxyFromEnvironment: "*", proxyConnectHeader: "*",
      }],
    },
  },
  "kustomize.config.k8s.io/v1beta1/Kustomization": {
    apiVersion: "*", kind: "*", metadata: METADATA, namespace: "*", namePrefix: "*",
    nameSuffix: "*", resources: "*", components: "*", labels: "*", commonLabels: "*",
    commonAnnotations: "*", images: "*", configMapGenerator: "*", secretGenerator: "*",
    generatorOptions: "*", patches: "*", replicas: "*",
  },
};

const DOWNWARD_ENV_PATHS = new Set([
  "metadata.name", "metadata.namespace", "metadata.uid", "spec.nodeName",
  "spec.serviceAccountName", "status.hostIP", "status.hostIPs", "status.podIP", "status.podIPs",
]);
const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

const modelFor = (apiVersion, kind) => {
  const [g, v] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  const grp = g.replace(/\.k8s\.io$/, "").split(".").filter(Boolean)
    .map((s) => s[0].toUpperCase() + s.slice(1)).join("");
  const V = v[0].toUpperCase() + v.slice(1);
  return k8s[`${grp}${V}${kind}`] || k8s[`${V}${kind}`];
};

function walk(val, type, path, errs) {
  if (val === null || val === undefined) return;
  const arr = /^Array<(.+)>$/.exec(type);
  if (arr) {
    if (!Array.isArray(val)) errs.push(`${path}: expected array`);
    else val.forEach((x, i) => walk(x, arr[1], `${path}[${i}]`, errs));
    return;
  }
  const map = /^\{ \[key: string\]: (.+); \}$/.exec(type);
  if (map) { for (const [k, x] of Object.entries(val)) walk(x, map[1], `${path}.${k}`, errs); return; }
  const M = k8s[type];
  if (!M || typeof M.getAttributeTypeMap !== "function") return; // primitives, IntOrString
  if (typeof val !== "object" || Array.isArray(val)) { errs.push(`${path}: expected object (${type})`); return; }
  const attrs = new Map(M.getAttributeTypeMap().map((a) => [a.baseName, a.type]));
  for (const [k, x] of Object.entries(val)) {
    if (!attrs.has(k)) errs.push(`${path}.${k}: unknown field in ${type}`);
    else walk(x, attrs.get(k), `${path}.${k}`, errs);
  }
}

function structWalk(val, spec, path, errs) {
  if (spec === "*" || val === null || val === undefined) return;
  if (Array.isArray(spec)) {
    if (!Array.isArray(val)) { errs.push(`${path}: expected array`); return; }
    val.forEach((x, i) => structWalk(x, spec[0], `${path}[${i}]`, errs));
    return;
  }
  if (typeof val !== "object" || Array.isArray(val)) { errs.push(`${path}: expected object`); return; }
  for (const [k, x] of Object.entries(val)) {
    if (!(k in spec)) errs.push(`${path}.${k}: unknown field`);
    else structWalk(x, spec[k], `${path}.${k}`, errs);
  }
}

const oneOf = (v, allowed, path, errs) => {
  if (v !== undefined && !allowed.includes(v)) errs.push(`${path}: "${v}" is not one of ${allowed.join("|")}`);
};

// The pod template (or pod spec) of a workload, with its path.
function podSpecOf(obj) {
  switch (obj.kind) {
    case "Pod": return [obj.spec, ".spec"];
    case "Deployment": case "StatefulSet": case "DaemonSet": case "ReplicaSet":
      return [obj.spec?.template?.spec, ".spec.template.spec"];
    case "Job": return [obj.spec?.template?.spec, ".spec.template.spec"];
    case "CronJob": return [obj.spec?.jobTemplate?.spec?.template?.spec, ".spec.jobTemplate.spec.template.spec"];
    default: return [null, ""];
  }
}

function checkProbe(probe, ports, path, errs) {
  if (!probe) return;
  const handlers = ["exec", "httpGet", "tcpSocket", "grpc"].filter((h) => probe[h] !== undefined);
  if (handlers.length !== 1) errs.push(`${path}: needs exactly one handler, has ${handlers.length}`);
  const port = probe.httpGet?.port ?? probe.tcpSocket?.port ?? probe.grpc?.port;
  if (typeof port === "number" && (port < 1 || port > 65535)) errs.push(`${path}: port ${port} out of range`);
  if (typeof port === "string" && !ports.has(port)) errs.push(`${path}: port name "${port}" not declared by the container`);
  if (probe.httpGet?.path !== undefined && !String(probe.httpGet.path).startsWith("/")) errs.push(`${path}.httpGet.path must start with /`);
}

function checkContainer(c, isInit, volumes, path, errs) {
  if (c.name !== undefined && !DNS1123_LABEL.test(c.name)) errs.push(`${path}.name: "${c.name}" is not a DNS-1123 label`);
  if (isInit) oneOf(c.restartPolicy, ["Always"], `${path}.restartPolicy`, errs);
  if (isInit && c.restartPolicy !== "Always") {
    for (const p of ["startupProbe", "readinessProbe", "livenessProbe", "lifecycle"]) {
      if (c[p] !== undefined) errs.push(`${path}.${p}: only allowed on init containers with restartPolicy: Always`);
    }
  }
  oneOf(c.imagePullPolicy, ["Always", "IfNotPresent", "Never"], `${path}.imagePullPolicy`, errs);
  const ports = new Set();
  (c.ports || []).forEach((p, i) => {
    oneOf(p.protocol, ["TCP", "UDP", "SCTP"], `${path}.ports[${i}].protocol`, errs);
    if (typeof p.containerPort === "number" && (p.containerPort < 1 || p.containerPort > 65535)) {
      errs.push(`${path}.ports[${i}].containerPort out of range`);
    }
    if (p.name !== undefined) {
      if (!/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(p.name) || p.name.length > 15 || !/[a-z]/.test(p.name)) {
        errs.push(`${path}.ports[${i}].name: "${p.name}" is not an IANA_SVC_NAME`);
      }
      ports.add(p.name);
    }
  });
  for (const p of ["startupProbe", "readinessProbe", "livenessProbe"]) checkProbe(c[p], ports, `${path}.${p}`, errs);
  (c.env || []).forEach((e, i) => {
    const fp = e.valueFrom?.fieldRef?.fieldPath;
    if (fp !== undefined && !DOWNWARD_ENV_PATHS.has(fp) && !/^metadata\.(labels|annotations)\['[^']+'\]$/.test(fp)) {
      errs.push(`${path}.env[${i}]: fieldPath "${fp}" is not supported by the downward API`);
    }
  });
  (c.volumeMounts || []).forEach((m, i) => {
    if (!volumes.has(m.name)) errs.push(`${path}.volumeMounts[${i}]: volume "${m.name}" not defined in the pod`);
  });
  const sc = c.securityContext;
  if (sc) {
    oneOf(sc.seccompProfile?.type, ["RuntimeDefault", "Localhost", "Unconfined"], `${path}.securityContext.seccompProfile.type`, errs);
    for (const k of ["add", "drop"]) {
      (sc.capabilities?.[k] || []).forEach((cap) => {
        if (!/^[A-Z_]+$/.test(cap) || cap.startsWith("CAP_")) errs.push(`${path}.securityContext.capabilities.${k}: bad capability "${cap}"`);
      });
    }
    if (sc.runAsNonRoot === true && sc.runAsUser === 0) errs.push(`${path}.securityContext: runAsNonRoot with runAsUser 0`);
  }
}

function checkSemantics(obj, errs) {
  const name = obj.metadata?.name;
  if (name !== undefined && !DNS1123_SUBDOMAIN.test(name)) errs.push(`.metadata.name: "${name}" is not a DNS-1123 subdomain`);
  const [pod, ppath] = podSpecOf(obj);
  if (pod) {
    const volumes = new Set((pod.volumes || []).map((v) => v.name));
    oneOf(pod.restartPolicy, obj.kind === "Job" || obj.kind === "CronJob" ? ["Never", "OnFailure"] : ["Always"],
      `${ppath}.restartPolicy`, errs);
    oneOf(pod.securityContext?.seccompProfile?.type, ["RuntimeDefault", "Localhost", "Unconfined"],
      `${ppath}.securityContext.seccompProfile.type`, errs);
    (pod.initContainers || []).forEach((c, i) => checkContainer(c, true, volumes, `${ppath}.initContainers[${i}]`, errs));
    (pod.containers || []).forEach((c, i) => checkContainer(c, false, volumes, `${ppath}.containers[${i}]`, errs));
    const names = [...(pod.initContainers || []), ...(pod.containers || [])].map((c) => c.name);
    const dup = names.find((n, i) => names.indexOf(n) !== i);
    if (dup) errs.push(`${ppath}: duplicate container name "${dup}"`);
  }
  const sel = obj.spec?.selector?.matchLabels;
  const tl = obj.spec?.template?.metadata?.labels;
  if (sel && ["Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"].includes(obj.kind)) {
    for (const [k, v] of Object.entries(sel)) {
      if (!tl || tl[k] !== v) errs.push(`.spec.selector.matchLabels.${k}=${v} does not match the template labels`);
    }
  }
  if (obj.kind === "Service") {
    oneOf(obj.spec?.type, ["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"], ".spec.type", errs);
    (obj.spec?.ports || []).forEach((p, i) => oneOf(p.protocol, ["TCP", "UDP", "SCTP"], `.spec.ports[${i}].protocol`, errs));
  }
}

function checkKustomization(file, obj, errs) {
  for (const r of obj.resources || []) {
    if (!existsSync(resolve(dirname(file), r))) errs.push(`.resources: "${r}" does not exist`);
  }
}

async function classFor(apiVersion, kind) {
  const [g, v] = apiVersion.includes("/") ? apiVersion.split("/") : [null, apiVersion];
  let mod;
  if (g && CRD_PACKAGES[g]) mod = `${CRD_PACKAGES[g]}/${v}`;
  else mod = g ? `kubernetes-models/${g}/${v}` : `kubernetes-models/${v}`;
  try {
    return (await import(mod))[kind];
  } catch {
    return undefined;
  }
}

async function checkDoc(file, obj, errs) {
  if (typeof obj !== "object" || Array.isArray(obj)) { errs.push("document is not a mapping"); return; }
  if (typeof obj.apiVersion !== "string" || typeof obj.kind !== "string") { errs.push("missing apiVersion or kind"); return; }
  const key = `${obj.apiVersion}/${obj.kind}`;
  if (obj.kind === "Kustomization") {
    if (!STRUCT[key]) { errs.push(`unknown kind ${key}`); return; }
    structWalk(obj, STRUCT[key], "", errs);
    checkKustomization(file, obj, errs);
    return;
  }
  const Cls = await classFor(obj.apiVersion, obj.kind);
  if (!Cls) { errs.push(`unknown kind ${key}`); return; }
  try { new Cls(obj).validate(); } catch (e) { errs.push(e.message); }
  const M = modelFor(obj.apiVersion, obj.kind);
  if (M) walk(obj, M.name, "", errs);
  else if (STRUCT[key]) structWalk(obj, STRUCT[key], "", errs);
  else errs.push(`no field list for ${key}: add one to STRUCT`);
  checkSemantics(obj, errs);
}

const files = process.argv.slice(2);
if (!files.length) { console.error("usage: node k8s-strict.mjs FILE.yaml ..."); process.exit(2); }
let bad = 0;
for (const file of files) {
  let text;
  try { text = readFileSync(file, "utf8"); } catch (e) { console.log(`${file}: ${e.message}`); bad++; continue; }
  for (const d of parseAllDocuments(text)) {
    if (d.errors.length) { console.log(`${file}: YAML error: ${d.errors[0].message}`); bad++; continue; }
    const obj = d.toJS();
    if (!obj) continue;
    const id = `${file}: ${obj.kind}/${obj.metadata?.name ?? "-"}`;
    const errs = [];
    await checkDoc(file, obj, errs);
    if (errs.length) { bad++; console.log(`${id} INVALID\n  ` + errs.join("\n  ")); } else console.log(`${id} OK`);
  }
}
process.exit(bad ? 1 : 0);
