//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/gpudra/gpudra/pkg/opaqueconfig/examples"
)

const admissionNS = "gpudra-admission"

// admissionParams is the JSON a claim carries for an example's text (YAML
// becomes JSON as in a manifest); ok is false when the text is no JSON at all.
func admissionParams(text string) (raw []byte, ok bool) {
	raw = []byte(strings.TrimSpace(text))
	if json.Valid(raw) {
		return raw, true
	}
	converted, err := yaml.YAMLToJSON(raw)
	if err != nil || !json.Valid(converted) {
		return nil, false
	}
	return converted, true
}

func admissionSpec(params []byte) resourceapi.ResourceClaimSpec {
	return resourceapi.ResourceClaimSpec{Devices: resourceapi.DeviceClaim{
		Requests: []resourceapi.DeviceRequest{{Name: "gpu", Exactly: &resourceapi.ExactDeviceRequest{DeviceClassName: "gpu.nvidia.com"}}},
		Config: []resourceapi.DeviceClaimConfiguration{{
			Requests: []string{"gpu"},
			DeviceConfiguration: resourceapi.DeviceConfiguration{Opaque: &resourceapi.OpaqueDeviceConfiguration{
				Driver: driverName, Parameters: runtime.RawExtension{Raw: params},
			}},
		}},
	}}
}

// createBoth creates (dry run: admission runs, nothing is stored) a claim and
// a template with params as the driver's config, and returns their errors.
func createBoth(t *testing.T, c kubernetes.Interface, name string, params []byte) (claimErr, templateErr error) {
	t.Helper()
	ctx := context.Background()
	dry := metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}
	_, claimErr = c.ResourceV1().ResourceClaims(admissionNS).Create(ctx, &resourceapi.ResourceClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: admissionSpec(params)}, dry)
	_, templateErr = c.ResourceV1().ResourceClaimTemplates(admissionNS).Create(ctx, &resourceapi.ResourceClaimTemplate{
		ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: resourceapi.ResourceClaimTemplateSpec{Spec: admissionSpec(params)}}, dry)
	return claimErr, templateErr
}

// TestAdmissionRefusesInvalidConfigs: with the chart's default
// admissionPolicy.validateConfigs, every invalid example config of
// pkg/opaqueconfig/examples is refused at creation, as a claim and as a
// template, with the error prepare would give; the valid ones are admitted.
func TestAdmissionRefusesInvalidConfigs(t *testing.T) {
	draMode(t)
	c := client(t)
	ctx := context.Background()
	if _, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: admissionNS}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.CoreV1().Namespaces().Delete(context.Background(), admissionNS, metav1.DeleteOptions{}) })

	// A new or changed policy takes a moment to reach the API server's admission.
	probe := []byte(`{"apiVersion":"resource.nvidia.com/v1beta1","kind":"TpuConfig"}`)
	eventually(t, time.Minute, "the claim config policy in force", func() (bool, string) {
		claimErr, templateErr := createBoth(t, c, "probe", probe)
		return claimErr != nil && templateErr != nil, "a claim with kind TpuConfig is admitted: is admissionPolicy.validateConfigs on?"
	})

	for _, ex := range examples.ValidConfigs {
		raw, ok := admissionParams(ex.Params)
		if !ok {
			t.Fatalf("valid example %q is no JSON", ex.Name)
		}
		if claimErr, templateErr := createBoth(t, c, "valid", raw); claimErr != nil || templateErr != nil {
			t.Errorf("valid example %q refused: claim: %v; template: %v", ex.Name, claimErr, templateErr)
		}
	}
	for _, ex := range examples.InvalidConfigs {
		raw, ok := admissionParams(ex.Params)
		if !ok {
			continue // the client cannot even send it: not JSON
		}
		claimErr, templateErr := createBoth(t, c, "invalid", raw)
		switch ex.Admission {
		case examples.Refused:
			for what, err := range map[string]error{"claim": claimErr, "template": templateErr} {
				prefix := "claim " + admissionNS + "/invalid"
				if what == "template" {
					prefix = "ResourceClaimTemplate " + admissionNS + "/invalid"
				}
				switch {
				case err == nil:
					t.Errorf("invalid example %q admitted as a %s, want refused with %q", ex.Name, what, ex.Err)
				case !strings.Contains(err.Error(), prefix) || !strings.Contains(err.Error(), "claim config #1") ||
					!strings.Contains(err.Error(), ": "+ex.Err+": fix the "):
					t.Errorf("invalid example %q as a %s refused with\n  %v\nwant prepare's error naming %s, config #1 and %q", ex.Name, what, err, prefix, ex.Err)
				}
			}
		case examples.RefusedByAPIServer:
			if claimErr == nil || templateErr == nil {
				t.Errorf("example %q (not a JSON object) admitted: claim: %v; template: %v", ex.Name, claimErr, templateErr)
			}
		case examples.Unseen, examples.Collapsed:
			// The policy cannot see these (prepare refuses the Unseen ones).
			if claimErr != nil || templateErr != nil {
				t.Logf("example %q refused although the policy cannot see its problem: claim: %v; template: %v", ex.Name, claimErr, templateErr)
			}
		}
	}
}
