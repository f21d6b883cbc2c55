//! The install manifests (`havoc install --print`, `deploy/`): namespace, CRDs, least-privilege
//! RBAC, the operator Deployment (two replicas, leader election) and the agent DaemonSet.
//!
//! Generated here so `deploy/` cannot drift: a test compares the files with this output.

/// What varies between installs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallOptions {
    /// Namespace of the operator and the agents.
    pub namespace: String,
    /// Image holding the static `havoc` binary.
    pub image: String,
    /// `--namespaces` given to the operator (open to chaos without the opt-in label).
    pub chaos_namespaces: Vec<String>,
}

impl Default for InstallOptions {
    fn default() -> Self {
        InstallOptions {
            namespace: "havoc-system".into(),
            image: "havoc:dev".into(),
            chaos_namespaces: Vec::new(),
        }
    }
}

/// The namespace document.
pub fn namespace(o: &InstallOptions) -> String {
    format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  labels:\n    app.kubernetes.io/part-of: havoc\n",
        ns = o.namespace
    )
}

/// RBAC: the operator gets only what it uses; the agent gets no API access at all.
pub fn rbac(o: &InstallOptions) -> String {
    format!(
        r#"apiVersion: v1
kind: ServiceAccount
metadata:
  name: havoc-operator
  namespace: {ns}
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: havoc-agent
  namespace: {ns}
automountServiceAccountToken: false
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: havoc-operator
rules:
  - apiGroups: ["havoc.dev"]
    resources: ["podchaos", "networkchaos", "stresschaos", "timechaos", "syscallchaos", "iochaos", "dnschaos", "httpchaos"]
    verbs: ["get", "list", "watch", "patch", "update"]
  - apiGroups: ["havoc.dev"]
    resources: ["podchaos/status", "networkchaos/status", "stresschaos/status", "timechaos/status", "syscallchaos/status", "iochaos/status", "dnschaos/status", "httpchaos/status"]
    verbs: ["get", "patch", "update"]
  - apiGroups: ["havoc.dev"]
    resources: ["podchaos/finalizers", "networkchaos/finalizers", "stresschaos/finalizers", "timechaos/finalizers", "syscallchaos/finalizers", "iochaos/finalizers", "dnschaos/finalizers", "httpchaos/finalizers"]
    verbs: ["update"]
  - apiGroups: [""]
    resources: ["pods"]
    verbs: ["get", "list", "watch", "delete", "patch"]
  # Schedule, Workflow and StatusCheck: their runs and steps are chaos objects, workflows,
  # status checks and task pods the operator creates and deletes.
  - apiGroups: ["havoc.dev"]
    resources: ["schedules", "workflows", "statuschecks"]
    verbs: ["get", "list", "watch", "patch", "update"]
  - apiGroups: ["havoc.dev"]
    resources: ["schedules/status", "workflows/status", "statuschecks/status"]
    verbs: ["get", "patch", "update"]
  - apiGroups: ["havoc.dev"]
    resources: ["podchaos", "networkchaos", "stresschaos", "timechaos", "syscallchaos", "iochaos", "dnschaos", "httpchaos", "workflows", "statuschecks"]
    verbs: ["create", "delete"]
  - apiGroups: ["havoc.dev"]
    resources: ["schedules/finalizers", "workflows/finalizers"]
    verbs: ["update"]
  - apiGroups: [""]
    resources: ["pods"]
    verbs: ["create"]
  - apiGroups: [""]
    resources: ["pods/log"]
    verbs: ["get"]
  - apiGroups: [""]
    resources: ["nodes", "namespaces"]
    verbs: ["get", "list", "watch"]
  - apiGroups: ["events.k8s.io"]
    resources: ["events"]
    verbs: ["create", "patch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: havoc-operator
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: havoc-operator
subjects:
  - kind: ServiceAccount
    name: havoc-operator
    namespace: {ns}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: havoc-operator-leader
  namespace: {ns}
rules:
  - apiGroups: ["coordination.k8s.io"]
    resources: ["leases"]
    verbs: ["get", "create", "update"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: havoc-operator-leader
  namespace: {ns}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: havoc-operator-leader
subjects:
  - kind: ServiceAccount
    name: havoc-operator
    namespace: {ns}
"#,
        ns = o.namespace
    )
}

/// The operator Deployment: two replicas, one leads (Lease `havoc-operator-leader`).
pub fn operator(o: &InstallOptions) -> String {
    let chaos_ns = if o.chaos_namespaces.is_empty() {
        String::new()
    } else {
        format!(
            "\n            - --namespaces={}",
            o.chaos_namespaces.join(",")
        )
    };
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: havoc-operator
  namespace: {ns}
  labels:
    app.kubernetes.io/name: havoc-operator
spec:
  replicas: 2
  selector:
    matchLabels:
      app.kubernetes.io/name: havoc-operator
  template:
    metadata:
      labels:
        app.kubernetes.io/name: havoc-operator
    spec:
      serviceAccountName: havoc-operator
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
      containers:
        - name: operator
          image: {image}
          imagePullPolicy: IfNotPresent
          args:
            - operator
            # The pod's own namespace, so that kustomize's `namespace:` moves it too.
            - --operator-namespace=$(POD_NAMESPACE)
            - --metrics-addr=0.0.0.0:9464
            - --agent-ca=/etc/havoc/tls/ca.pem
            - --agent-cert=/etc/havoc/tls/operator.pem
            - --agent-key=/etc/havoc/tls/operator-key.pem{chaos_ns}
          env:
            - name: POD_NAME
              valueFrom:
                fieldRef:
                  fieldPath: metadata.name
            - name: POD_NAMESPACE
              valueFrom:
                fieldRef:
                  fieldPath: metadata.namespace
          resources:
            requests:
              cpu: 50m
              memory: 64Mi
            limits:
              memory: 256Mi
          ports:
            - name: metrics
              containerPort: 9464
          livenessProbe:
            httpGet:
              path: /healthz
              port: metrics
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities:
              drop: ["ALL"]
          volumeMounts:
            - name: tls
              mountPath: /etc/havoc/tls
              readOnly: true
      volumes:
        - name: tls
          secret:
            secretName: havoc-operator-tls
"#,
        ns = o.namespace,
        image = o.image,
    )
}

/// The agent DaemonSet: privileged, host PID, the container runtime socket and /proc.
pub fn agent(o: &InstallOptions) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: havoc-agent
  namespace: {ns}
  labels:
    app.kubernetes.io/name: havoc-agent
spec:
  selector:
    matchLabels:
      app.kubernetes.io/name: havoc-agent
  template:
    metadata:
      labels:
        app.kubernetes.io/name: havoc-agent
    spec:
      serviceAccountName: havoc-agent
      automountServiceAccountToken: false
      hostPID: true
      tolerations:
        - operator: Exists
      containers:
        - name: agent
          image: {image}
          imagePullPolicy: IfNotPresent
          args:
            - agent
            - --listen=0.0.0.0:7433
            - --metrics-addr=0.0.0.0:7434
            - --tls-ca=/etc/havoc/tls/ca.pem
            - --tls-cert=/etc/havoc/tls/agent.pem
            - --tls-key=/etc/havoc/tls/agent-key.pem
            - --state-dir=/var/lib/havoc
          env:
            - name: NODE_NAME
              valueFrom:
                fieldRef:
                  fieldPath: spec.nodeName
            # One malloc arena per injection thread would grow RSS to ~68 MiB over 50
            # injections; two keep it near 12 MiB (measured).
            - name: MALLOC_ARENA_MAX
              value: "2"
          # The agent's own footprint: stress workers run in the target pods' cgroups.
          resources:
            requests:
              cpu: 50m
              memory: 64Mi
            limits:
              memory: 512Mi
          ports:
            - name: grpc
              containerPort: 7433
          securityContext:
            privileged: true
          volumeMounts:
            - name: containerd
              mountPath: /run/containerd
            # The journal of what to undo survives an agent restart (replayed at start).
            - name: state
              mountPath: /var/lib/havoc
            - name: sys
              mountPath: /sys
            - name: tls
              mountPath: /etc/havoc/tls
              readOnly: true
      volumes:
        - name: containerd
          hostPath:
            path: /run/containerd
        - name: state
          hostPath:
            path: /var/lib/havoc
            type: DirectoryOrCreate
        - name: sys
          hostPath:
            path: /sys
        - name: tls
          secret:
            secretName: havoc-agent-tls
"#,
        ns = o.namespace,
        image = o.image,
    )
}

/// `deploy/kustomization.yaml`: `deploy/` as a kustomize base. Its knobs are the image
/// (`images:`), the namespace (`namespace:`) and the containers' resources (a patch).
pub fn kustomization(o: &InstallOptions) -> String {
    let (name, tag) = match o.image.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n, t),
        _ => (o.image.as_str(), "latest"),
    };
    format!(
        r#"# Havoc as a kustomize base: `kubectl apply -k deploy/` (or `kubectl kustomize deploy/`).
# An overlay sets the knobs, for example:
#
#   resources: [../path/to/havoc/deploy]
#   namespace: chaos-ops                  # the operator's and agents' namespace
#   images:
#     - name: {name}
#       newName: registry.example.com/havoc
#       newTag: "1.0"
#   patches:                              # resources of the operator (or the agent DaemonSet)
#     - target: {{kind: Deployment, name: havoc-operator}}
#       patch: |-
#         - op: replace
#           path: /spec/template/spec/containers/0/resources
#           value: {{requests: {{cpu: 100m, memory: 128Mi}}, limits: {{memory: 512Mi}}}}
#
# Generated by havoc-operator's manifests.rs (HAVOC_BLESS=1 cargo test -p havoc-operator deploy_files).
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: {ns}
resources:
  - namespace.yaml
  - crds.yaml
  - rbac.yaml
  - operator.yaml
  - agent.yaml
images:
  - name: {name}
    newTag: "{tag}"
"#,
        ns = o.namespace,
    )
}

/// Everything, in apply order, as one multi-document YAML.
pub fn install_manifests(o: &InstallOptions) -> String {
    let mut docs = vec![
        namespace(o),
        havoc_k8s::crds_yaml(),
        rbac(o),
        operator(o),
        agent(o),
    ];
    for d in &mut docs {
        let t = d.trim_end().trim_start_matches("---\n").to_string();
        *d = t;
    }
    let mut s = docs.join("\n---\n");
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn deploy(file: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../deploy")
            .join(file)
    }

    /// `deploy/` is generated; run with `HAVOC_BLESS=1` to rewrite it after a change.
    #[test]
    fn deploy_files_match_the_generated_manifests() {
        let o = InstallOptions::default();
        let files = [
            ("namespace.yaml", namespace(&o)),
            ("crds.yaml", havoc_k8s::crds_yaml()),
            ("rbac.yaml", rbac(&o)),
            ("operator.yaml", operator(&o)),
            ("agent.yaml", agent(&o)),
            ("install.yaml", install_manifests(&o)),
            ("kustomization.yaml", kustomization(&o)),
        ];
        let bless = std::env::var_os("HAVOC_BLESS").is_some();
        for (name, want) in files {
            let path = deploy(name);
            if bless {
                std::fs::write(&path, &want).expect("write deploy file");
            }
            let have = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            assert!(
                have == want,
                "deploy/{name} is stale: run `HAVOC_BLESS=1 cargo test -p havoc-operator deploy_files`"
            );
        }
    }

    #[test]
    fn every_document_parses_and_the_agent_has_no_api_access() {
        let all = install_manifests(&InstallOptions::default());
        let mut kinds = Vec::new();
        for doc in serde_yaml_ng::Deserializer::from_str(&all) {
            let v: serde_json::Value =
                serde::Deserialize::deserialize(doc).expect("valid YAML document");
            kinds.push(v["kind"].as_str().expect("kind").to_string());
            if v["kind"] == "DaemonSet" {
                let spec = &v["spec"]["template"]["spec"];
                assert_eq!(spec["automountServiceAccountToken"], false);
                assert_eq!(spec["hostPID"], true);
            }
            if v["kind"] == "ClusterRole" {
                let text = serde_json::to_string(&v).expect("json");
                assert!(!text.contains("\"*\""), "no wildcards in RBAC");
                assert!(!text.contains("secrets"), "the operator reads no secrets");
            }
        }
        assert_eq!(
            kinds
                .iter()
                .filter(|k| *k == "CustomResourceDefinition")
                .count(),
            havoc_k8s::crds().len()
        );
        for k in [
            "Namespace",
            "ClusterRole",
            "Role",
            "Deployment",
            "DaemonSet",
        ] {
            assert!(kinds.iter().any(|x| x == k), "{k} missing: {kinds:?}");
        }
    }
}
