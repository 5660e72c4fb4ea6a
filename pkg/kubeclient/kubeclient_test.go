package kubeclient

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestConfigFromKubeconfig(t *testing.T) {
	p := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(p, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://10.0.0.1:6443"}}]
users: [{name: u, user: {token: x}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Config(p, "gpudra-test")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Host != "https://10.0.0.1:6443" || cfg.UserAgent != "gpudra-test" || cfg.ContentType != "application/vnd.kubernetes.protobuf" {
		t.Fatalf("config %+v", cfg)
	}
}

func TestConfigOutsideAClusterSaysWhatToDo(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	t.Setenv("KUBERNETES_SERVICE_PORT", "")
	_, err := Config("", "gpudra-test")
	if err == nil || !strings.Contains(err.Error(), "pass --kubeconfig") {
		t.Fatalf("error %v, want one that says to pass --kubeconfig", err)
	}
}
