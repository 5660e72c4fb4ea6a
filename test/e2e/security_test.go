//go:build e2e

package e2e

import (
	"context"
	"os"
	"sort"
	"strings"
	"testing"

	authorizationv1 "k8s.io/api/authorization/v1"
	resourceapi "k8s.io/api/resource/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
)

// nodeNameExtra is the user extra that the API server sets from the node
// claim of a pod's bound service account token; the chart's
// ValidatingAdmissionPolicy reads it.
const nodeNameExtra = "authentication.kubernetes.io/node-name"

var releaseNamespace = envOr("GPUDRA_E2E_NAMESPACE", "gpudra-system")

// pluginServiceAccount finds the service account of the chart's kubelet
// plugin DaemonSet.
func pluginServiceAccount(t *testing.T, c kubernetes.Interface) string {
	t.Helper()
	dss, err := c.AppsV1().DaemonSets(releaseNamespace).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, ds := range dss.Items {
		if strings.HasSuffix(ds.Name, "-kubelet-plugin") {
			return ds.Spec.Template.Spec.ServiceAccountName
		}
	}
	t.Fatalf("no *-kubelet-plugin DaemonSet in namespace %s (GPUDRA_E2E_NAMESPACE): is the chart installed in DRA mode?", releaseNamespace)
	return ""
}

// asPlugin returns a client that acts as the plugin's service account does
// from a pod on node (empty: a token without node claim), by impersonation:
// the API server authorizes and admits the requests exactly as the plugin's
// own (RBAC, then the admission policy on the user info).
func asPlugin(t *testing.T, sa, node string) kubernetes.Interface {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", os.Getenv("KUBECONFIG"))
	if err != nil {
		t.Fatalf("KUBECONFIG: %v (run through hack/e2e.sh)", err)
	}
	cfg = rest.CopyConfig(cfg)
	cfg.Impersonate = rest.ImpersonationConfig{
		UserName: "system:serviceaccount:" + releaseNamespace + ":" + sa,
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + releaseNamespace, "system:authenticated"},
	}
	if node != "" {
		cfg.Impersonate.Extra = map[string][]string{nodeNameExtra: {node}}
	}
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func sliceFor(node string) *resourceapi.ResourceSlice {
	return &resourceapi.ResourceSlice{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "security-e2e-"},
		Spec: resourceapi.ResourceSliceSpec{
			Driver:   driverName,
			NodeName: ptr.To(node),
			Pool:     resourceapi.ResourcePool{Name: node, ResourceSliceCount: 1},
			Devices:  []resourceapi.Device{{Name: "gpu-0"}},
		},
	}
}

// TestPluginCannotWriteResourceSlicesOfAnotherNode: with RBAC alone, the
// plugin's service account may write any ResourceSlice; the chart's
// admission policy limits the plugin on a node to that node's slices. All
// requests are dry runs (admission runs, nothing is stored).
func TestPluginCannotWriteResourceSlicesOfAnotherNode(t *testing.T) {
	ctx := context.Background()
	admin := client(t)
	nodes, err := admin.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil || len(nodes.Items) == 0 {
		t.Fatalf("nodes: %v %v", nodes, err)
	}
	node := nodes.Items[0].Name
	sa := pluginServiceAccount(t, admin)
	dryRun := metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}

	// Control: its own node's slice is allowed, so a denial below is the
	// policy's doing and not missing RBAC.
	if _, err := asPlugin(t, sa, node).ResourceV1().ResourceSlices().Create(ctx, sliceFor(node), dryRun); err != nil {
		t.Fatalf("the plugin on node %s may not write its own node's ResourceSlice: %v", node, err)
	}
	_, err = asPlugin(t, sa, node).ResourceV1().ResourceSlices().Create(ctx, sliceFor("other-"+node), dryRun)
	if !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) {
		t.Fatalf("the plugin on node %s wrote a ResourceSlice of another node: %v", node, err)
	}
	if !strings.Contains(err.Error(), "may only write ResourceSlices of its own node") {
		t.Errorf("denied, but not by the chart's admission policy: %v", err)
	}
	// A token without node claim (not from a pod) is refused too.
	_, err = asPlugin(t, sa, "").ResourceV1().ResourceSlices().Create(ctx, sliceFor(node), dryRun)
	if err == nil || !strings.Contains(err.Error(), "carries no node name") {
		t.Errorf("a request of the plugin's service account without node name: %v, want a denial by the admission policy", err)
	}
}

// TestPluginRBACGrantsOnlyWhatThePluginUses lists what the plugin's service
// account may do (SelfSubjectRulesReview as that account) and compares it
// with what the plugin calls: claims get (the kubelet plugin helper),
// ResourceSlices get/list/watch/create/update/delete (the ResourceSlice
// controller), nodes get (the slices' owner), and, with MPS sharing enabled,
// pods in the release namespace (the MPS control daemons). Rules that every
// authenticated user has (self reviews, discovery) are ignored.
// grantedRules returns what c may do in ns, as "<group>/<resource>:<verb>".
func grantedRules(t *testing.T, c kubernetes.Interface, ns string) map[string]bool {
	t.Helper()
	review, err := c.AuthorizationV1().SelfSubjectRulesReviews().Create(context.Background(), &authorizationv1.SelfSubjectRulesReview{
		Spec: authorizationv1.SelfSubjectRulesReviewSpec{Namespace: ns},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if review.Status.Incomplete {
		t.Logf("namespace %s: the rules review is incomplete: %s", ns, review.Status.EvaluationError)
	}
	granted := map[string]bool{}
	for _, r := range review.Status.ResourceRules {
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					granted[g+"/"+res+":"+v] = true
				}
			}
		}
	}
	return granted
}

func TestPluginRBACGrantsOnlyWhatThePluginUses(t *testing.T) {
	admin := client(t)
	sa := pluginServiceAccount(t, admin)
	c := asPlugin(t, sa, "")

	required := []string{
		"resource.k8s.io/resourceclaims:get",
		"resource.k8s.io/resourceslices:create", "resource.k8s.io/resourceslices:delete", "resource.k8s.io/resourceslices:get",
		"resource.k8s.io/resourceslices:list", "resource.k8s.io/resourceslices:update", "resource.k8s.io/resourceslices:watch",
		"/nodes:get",
		// Device status (status.devices of the node's claims: the API
		// server checks the node of associated-node itself).
		"resource.k8s.io/resourceclaims/status:patch", "resource.k8s.io/resourceclaims/driver:associated-node:patch",
		// The GPU feature labels on the node (featureLabels.enabled, on by
		// default; the admission policy narrows the patch).
		"/nodes:patch",
	}
	// Warning events on the node.
	requiredInDefault := []string{"/events:create"}
	// The feature labels as an NFD NodeFeature, when the cluster has NFD.
	requiredInRelease := []string{"nfd.k8s-sigs.io/nodefeatures:create", "nfd.k8s-sigs.io/nodefeatures:get", "nfd.k8s-sigs.io/nodefeatures:update"}
	// MPS sharing.
	optionalInRelease := map[string]bool{
		"/pods:create": true, "/pods:get": true, "/pods:list": true, "/pods:watch": true, "/pods:delete": true,
	}
	// What every service account may do (discovery, trust bundles...),
	// asked of a service account that no binding names.
	baseline := asPlugin(t, "gpudra-e2e-no-grants", "")
	for _, ns := range []string{releaseNamespace, "default"} {
		granted := grantedRules(t, c, ns)
		for g := range grantedRules(t, baseline, ns) {
			delete(granted, g)
		}
		want := append([]string(nil), required...)
		if ns == "default" {
			want = append(want, requiredInDefault...)
		} else {
			want = append(want, requiredInRelease...)
		}
		for _, w := range want {
			if !granted[w] {
				t.Errorf("namespace %s: the plugin's service account lacks %s, which the plugin uses", ns, w)
			}
		}
		var extra []string
		for g := range granted {
			if contains(want, g) || (ns == releaseNamespace && optionalInRelease[g]) {
				continue
			}
			extra = append(extra, g)
		}
		sort.Strings(extra)
		if len(extra) > 0 {
			t.Errorf("namespace %s: the plugin's service account may also %v, which the plugin does not use", ns, extra)
		}
	}
}
