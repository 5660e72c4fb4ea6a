// Package deploy tests what deployments/ ships: the chart's admission policy
// for opaque configs and the Grafana dashboard.
package deploy

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/version"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/apiserver/pkg/admission"
	plugincel "k8s.io/apiserver/pkg/admission/plugin/cel"
	"k8s.io/apiserver/pkg/admission/plugin/policy/validating"
	"k8s.io/apiserver/pkg/admission/plugin/webhook/matchconditions"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/cel/environment"
	"sigs.k8s.io/yaml"
)

var (
	repoRoot  = filepath.Join("..", "..")
	chartDir  = filepath.Join(repoRoot, "deployments", "helm", "gpudra")
	celFile   = filepath.Join(chartDir, "files", "claim-config-policy.yaml")
	valuesYML = filepath.Join(chartDir, "values.yaml")
)

// minKube is the oldest Kubernetes the chart renders the policy for; its
// API server compiles a new policy's CEL with the libraries of the version
// before it.
var newExpressionsVersion = version.MajorMinor(1, 34)

// policyCEL is the part of the policy that files/claim-config-policy.yaml holds.
type policyCEL struct {
	MatchConditions []admissionv1.MatchCondition `json:"matchConditions"`
	Variables       []admissionv1.Variable       `json:"variables"`
	Validations     []admissionv1.Validation     `json:"validations"`
}

// chartDriverName reads driverName from the chart's values.yaml.
func chartDriverName(t *testing.T) string {
	t.Helper()
	raw, err := os.ReadFile(valuesYML)
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		DriverName string `json:"driverName"`
	}
	if err := yaml.Unmarshal(raw, &v); err != nil || v.DriverName == "" {
		t.Fatalf("driverName of %s: %q %v", valuesYML, v.DriverName, err)
	}
	return v.DriverName
}

// filePolicy builds the policy's spec the way templates/claimconfigpolicy.yaml
// does: the file's CEL, after the variable driver.
func filePolicy(t *testing.T, driver string) *admissionv1.ValidatingAdmissionPolicy {
	t.Helper()
	raw, err := os.ReadFile(celFile)
	if err != nil {
		t.Fatal(err)
	}
	var c policyCEL
	if err := yaml.UnmarshalStrict(raw, &c); err != nil {
		t.Fatalf("%s: %v", celFile, err)
	}
	fail := admissionv1.Ignore
	return &admissionv1.ValidatingAdmissionPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "gpudra-claim-configs"},
		Spec: admissionv1.ValidatingAdmissionPolicySpec{
			FailurePolicy:   &fail,
			MatchConditions: c.MatchConditions,
			Variables:       append([]admissionv1.Variable{{Name: "driver", Expression: "'" + driver + "'"}}, c.Variables...),
			Validations:     c.Validations,
		},
	}
}

// helmBinary returns helm from $HELM, PATH or the local cluster's build.
func helmBinary() string {
	if h := os.Getenv("HELM"); h != "" {
		return h
	}
	if h, err := exec.LookPath("helm"); err == nil {
		return h
	}
	if h := "/var/tmp/gpudra-cluster/bin/helm"; fileExists(h) {
		return h
	}
	return ""
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// renderChart runs helm template with args and returns the objects of kind.
func renderChart(t *testing.T, kind string, args ...string) []map[string]any {
	t.Helper()
	helm := helmBinary()
	if helm == "" {
		t.Skip("no helm (set HELM, or put helm in PATH): the chart is not rendered")
	}
	cmd := exec.Command(helm, append([]string{"template", "gpudra", chartDir, "--namespace", "gpudra-system", "--kube-version", "1.37.1"}, args...)...)
	out, err := cmd.Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("helm template %v: %v\n%s", args, err, stderr)
	}
	var objs []map[string]any
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(string(out)), 4096)
	for {
		var obj map[string]any
		if err := dec.Decode(&obj); err != nil {
			break
		}
		if obj != nil && obj["kind"] == kind {
			objs = append(objs, obj)
		}
	}
	return objs
}

// TestChartShipsThePolicyOfTheFile renders the chart and checks that its
// policy is files/claim-config-policy.yaml after the variable driver, on by
// default and off with admissionPolicy.validateConfigs=false.
func TestChartShipsThePolicyOfTheFile(t *testing.T) {
	objs := renderChart(t, "ValidatingAdmissionPolicy", "--set", "mode=dra", "--set", "driverName=gpu.example.com")
	var shipped *admissionv1.ValidatingAdmissionPolicy
	for _, o := range objs {
		raw, _ := json.Marshal(o)
		var p admissionv1.ValidatingAdmissionPolicy
		if err := json.Unmarshal(raw, &p); err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(p.Name, "-claim-configs") {
			shipped = &p
		}
	}
	if shipped == nil {
		t.Fatalf("the chart renders no claim config policy by default (policies: %d)", len(objs))
	}
	want := filePolicy(t, "gpu.example.com")
	if !reflect.DeepEqual(shipped.Spec.Variables, want.Spec.Variables) ||
		!reflect.DeepEqual(shipped.Spec.Validations, want.Spec.Validations) ||
		!reflect.DeepEqual(shipped.Spec.MatchConditions, want.Spec.MatchConditions) {
		t.Errorf("the rendered policy differs from %s after the variable driver", celFile)
	}
	if fp := shipped.Spec.FailurePolicy; fp == nil || *fp != *want.Spec.FailurePolicy {
		t.Errorf("failurePolicy %v, want %v", fp, *want.Spec.FailurePolicy)
	}
	rules := shipped.Spec.MatchConstraints.ResourceRules
	if len(rules) != 1 || !reflect.DeepEqual(rules[0].Resources, []string{"resourceclaims", "resourceclaimtemplates"}) {
		t.Errorf("match rules %+v, want resourceclaims and resourceclaimtemplates", rules)
	}
	for _, o := range renderChart(t, "ValidatingAdmissionPolicy", "--set", "mode=dra", "--set", "admissionPolicy.validateConfigs=false") {
		if name, _ := o["metadata"].(map[string]any)["name"].(string); strings.HasSuffix(name, "-claim-configs") {
			t.Errorf("admissionPolicy.validateConfigs=false still renders %s", name)
		}
	}
}

// evaluator evaluates the policy with the API server's own code: the
// validating admission policy plugin's compiler and validator.
type evaluator struct {
	validator validating.Validator
}

func newEvaluator(t *testing.T, p *admissionv1.ValidatingAdmissionPolicy) *evaluator {
	t.Helper()
	// Compile as a new policy on the oldest API server the chart renders it
	// for: a CEL function it lacks fails here.
	strict, err := plugincel.NewCompositedCompiler(environment.MustBaseEnvSet(newExpressionsVersion))
	if err != nil {
		t.Fatal(err)
	}
	withAuthz := plugincel.OptionalVariableDeclarations{HasAuthorizer: true}
	for _, v := range p.Spec.Variables {
		if r := strict.CompileAndStoreVariable(&validating.Variable{Name: v.Name, Expression: v.Expression}, withAuthz, environment.NewExpressions); r.Error != nil {
			t.Fatalf("variable %s does not compile: %v", v.Name, r.Error)
		}
	}
	var exprs []plugincel.ExpressionAccessor
	for i := range p.Spec.MatchConditions {
		exprs = append(exprs, (*matchconditions.MatchCondition)(&p.Spec.MatchConditions[i]))
	}
	for _, v := range p.Spec.Validations {
		exprs = append(exprs, &validating.ValidationCondition{Expression: v.Expression})
		if v.MessageExpression != "" {
			exprs = append(exprs, &validating.MessageExpressionCondition{MessageExpression: v.MessageExpression})
		}
	}
	for _, e := range exprs {
		if r := strict.CompileCELExpression(e, withAuthz, environment.NewExpressions); r.Error != nil {
			t.Fatalf("%q does not compile: %v", e.GetExpression(), r.Error)
		}
	}

	// What the plugin does (validating.compilePolicy) for a stored policy.
	c, err := plugincel.NewCompositedCompiler(environment.MustBaseEnvSet(environment.DefaultCompatibilityVersion()))
	if err != nil {
		t.Fatal(err)
	}
	var vars []plugincel.NamedExpressionAccessor
	for _, v := range p.Spec.Variables {
		vars = append(vars, &validating.Variable{Name: v.Name, Expression: v.Expression})
	}
	c.CompileAndStoreVariables(vars, withAuthz, environment.StoredExpressions)
	var matchExprs, validations, messages []plugincel.ExpressionAccessor
	for i := range p.Spec.MatchConditions {
		matchExprs = append(matchExprs, (*matchconditions.MatchCondition)(&p.Spec.MatchConditions[i]))
	}
	for _, v := range p.Spec.Validations {
		validations = append(validations, &validating.ValidationCondition{Expression: v.Expression, Message: v.Message, Reason: v.Reason})
		var m plugincel.ExpressionAccessor
		if v.MessageExpression != "" {
			m = &validating.MessageExpressionCondition{MessageExpression: v.MessageExpression}
		}
		messages = append(messages, m)
	}
	matcher := matchconditions.NewMatcher(c.CompileCondition(matchExprs, withAuthz, environment.StoredExpressions),
		p.Spec.FailurePolicy, "policy", "validate", p.Name)
	return &evaluator{validator: validating.NewValidator(
		c.CompileCondition(validations, withAuthz, environment.StoredExpressions),
		matcher,
		c.CompileCondition(nil, withAuthz, environment.StoredExpressions),
		c.CompileCondition(messages, plugincel.OptionalVariableDeclarations{}, environment.StoredExpressions),
		p.Spec.FailurePolicy, nil)}
}

// decision is what the policy decided about one request.
type decision struct {
	denied  bool
	message string
	errors  []string // evaluation errors (failurePolicy Ignore admits)
}

// evaluate runs the policy on a create (old == nil) or update of obj, a
// *ResourceClaim or *ResourceClaimTemplate.
func (e *evaluator) evaluate(t *testing.T, obj, old runtime.Object) decision {
	t.Helper()
	var resource, kind, ns, name string
	switch o := obj.(type) {
	case *resourceapi.ResourceClaim:
		resource, kind, ns, name = "resourceclaims", "ResourceClaim", o.Namespace, o.Name
	case *resourceapi.ResourceClaimTemplate:
		resource, kind, ns, name = "resourceclaimtemplates", "ResourceClaimTemplate", o.Namespace, o.Name
	default:
		t.Fatalf("evaluate: %T", obj)
	}
	gvk := schema.GroupVersionKind{Group: "resource.k8s.io", Version: "v1", Kind: kind}
	gvr := schema.GroupVersionResource{Group: "resource.k8s.io", Version: "v1", Resource: resource}
	obj.GetObjectKind().SetGroupVersionKind(gvk)
	op := admission.Create
	var opts runtime.Object = &metav1.CreateOptions{}
	if old != nil {
		old.GetObjectKind().SetGroupVersionKind(gvk)
		op, opts = admission.Update, &metav1.UpdateOptions{}
	}
	attrs := admission.NewAttributesRecord(obj, old, gvk, ns, name, gvr, "", op, opts, false,
		&user.DefaultInfo{Name: "jane", Groups: []string{"system:authenticated"}})
	va := &admission.VersionedAttributes{Attributes: attrs, VersionedKind: gvk,
		VersionedObject: admission.NewLazyObject(obj)}
	if old != nil {
		va.VersionedOldObject = admission.NewLazyObject(old)
	}
	nsObj := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}
	res := e.validator.Validate(context.Background(), gvr, va, nil, nsObj, celconfig.RuntimeCELCostBudget, nil)
	var d decision
	for _, dec := range res.Decisions {
		switch dec.Evaluation {
		case validating.EvalError:
			d.errors = append(d.errors, dec.Message)
		case validating.EvalDeny:
			d.denied = true
			d.message = dec.Message
		}
	}
	return d
}
