package gfdlabels

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
)

const (
	// NodeFeatureGroupVersion is NFD's API of NodeFeature objects.
	NodeFeatureGroupVersion = "nfd.k8s-sigs.io/v1alpha1"
	// NodeNameLabel names the node of a NodeFeature object (NFD's label).
	NodeNameLabel = "nfd.node.kubernetes.io/node-name"
	// OwnedAnnotation lists, comma-separated, the node labels the plugin
	// set itself (node-label mode): the ones it may remove. Labels not in
	// it are never changed or removed.
	OwnedAnnotation = "nvidia.com/gpudra.feature-labels"
)

var nodeFeatureResource = schema.GroupVersionResource{Group: "nfd.k8s-sigs.io", Version: "v1alpha1", Resource: "nodefeatures"}

// Publisher writes a node's feature labels: as an NFD NodeFeature object
// <Namespace>/<NodeName> (spec.labels) when the cluster serves the
// NodeFeature API, else directly as labels of the node, only those with
// Prefix, tracked in OwnedAnnotation so that labels it no longer computes are
// removed and no other label is touched.
type Publisher struct {
	Client   kubernetes.Interface
	Dynamic  dynamic.Interface
	NodeName string
	// Namespace is the plugin's namespace, that of the NodeFeature object.
	Namespace string
}

// Publish makes the node carry exactly labels (all with Prefix) from this
// publisher; it is idempotent.
func (p *Publisher) Publish(ctx context.Context, labels map[string]string) error {
	for k := range labels {
		if !strings.HasPrefix(k, Prefix) {
			return fmt.Errorf("feature label %q: only %s labels are published", k, Prefix)
		}
	}
	useNFD, err := p.nodeFeatureAPI()
	if err != nil {
		return err
	}
	logger := klog.FromContext(ctx)
	if useNFD {
		if err := p.writeNodeFeature(ctx, labels); err != nil {
			return err
		}
		// Labels set on the node before NFD was installed go: NFD's master
		// now sets them from the NodeFeature.
		if err := p.labelNode(ctx, nil); err != nil {
			return err
		}
		logger.V(2).Info("Published the feature labels as a NodeFeature", "nodeFeature", klog.KRef(p.Namespace, p.NodeName), "labels", len(labels))
		return nil
	}
	if err := p.labelNode(ctx, labels); err != nil {
		return err
	}
	logger.V(2).Info("Published the feature labels on the node", "node", klog.KRef("", p.NodeName), "labels", len(labels))
	return nil
}

// PublishUntilDone retries Publish with backoff until it succeeds or ctx
// ends, logging each failure: labels are not worth failing the plugin for.
func (p *Publisher) PublishUntilDone(ctx context.Context, labels map[string]string) {
	logger := klog.FromContext(ctx)
	backoff := wait.Backoff{Duration: time.Second, Factor: 2, Steps: 1 << 30, Cap: 2 * time.Minute}
	_ = wait.ExponentialBackoffWithContext(ctx, backoff, func(ctx context.Context) (bool, error) {
		if err := p.Publish(ctx, labels); err != nil {
			logger.Error(err, "Publishing the GPU feature labels failed; retrying", "node", p.NodeName)
			return false, nil
		}
		return true, nil
	})
}

// nodeFeatureAPI tells whether the cluster serves NFD's NodeFeature API.
func (p *Publisher) nodeFeatureAPI() (bool, error) {
	if p.Dynamic == nil {
		return false, nil
	}
	list, err := p.Client.Discovery().ServerResourcesForGroupVersion(NodeFeatureGroupVersion)
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("discovering the NodeFeature API (%s): %w", NodeFeatureGroupVersion, err)
	}
	return slices.ContainsFunc(list.APIResources, func(r metav1.APIResource) bool { return r.Name == "nodefeatures" }), nil
}

func (p *Publisher) writeNodeFeature(ctx context.Context, labels map[string]string) error {
	client := p.Dynamic.Resource(nodeFeatureResource).Namespace(p.Namespace)
	specLabels := map[string]any{}
	for k, v := range labels {
		specLabels[k] = v
	}
	obj, err := client.Get(ctx, p.NodeName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		obj = &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": NodeFeatureGroupVersion,
			"kind":       "NodeFeature",
			"metadata": map[string]any{
				"name": p.NodeName, "namespace": p.Namespace,
				"labels": map[string]any{NodeNameLabel: p.NodeName},
			},
			"spec": map[string]any{"labels": specLabels},
		}}
		if _, err := client.Create(ctx, obj, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("creating NodeFeature %s/%s: %w", p.Namespace, p.NodeName, err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading NodeFeature %s/%s: %w", p.Namespace, p.NodeName, err)
	}
	if err := unstructured.SetNestedMap(obj.Object, specLabels, "spec", "labels"); err != nil {
		return fmt.Errorf("NodeFeature %s/%s: %w", p.Namespace, p.NodeName, err)
	}
	l := obj.GetLabels()
	if l == nil {
		l = map[string]string{}
	}
	l[NodeNameLabel] = p.NodeName
	obj.SetLabels(l)
	if _, err := client.Update(ctx, obj, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("updating NodeFeature %s/%s: %w", p.Namespace, p.NodeName, err)
	}
	return nil
}

// labelNode sets labels on the node and removes the ones it set before
// (OwnedAnnotation) that are not in labels, with one merge patch; nothing
// when the node is as wanted.
func (p *Publisher) labelNode(ctx context.Context, labels map[string]string) error {
	node, err := p.Client.CoreV1().Nodes().Get(ctx, p.NodeName, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("reading node %s: %w", p.NodeName, err)
	}
	patch := NodePatch(node.Labels, node.Annotations, labels)
	if patch == nil {
		return nil
	}
	data, err := json.Marshal(patch)
	if err != nil {
		return err
	}
	if _, err := p.Client.CoreV1().Nodes().Patch(ctx, p.NodeName, types.MergePatchType, data, metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("labeling node %s: %w", p.NodeName, err)
	}
	return nil
}

// NodePatch returns the JSON merge patch that takes a node with current
// labels and annotations to carrying labels from this plugin: it sets the
// labels whose value differs, removes the owned ones (OwnedAnnotation) not
// in labels, and records the new owned set; nil when nothing changes.
func NodePatch(current, annotations, labels map[string]string) map[string]any {
	owned := map[string]bool{}
	if a := annotations[OwnedAnnotation]; a != "" {
		for _, k := range strings.Split(a, ",") {
			// Only nvidia.com/ labels are ever removed, whatever the
			// annotation says.
			if strings.HasPrefix(k, Prefix) {
				owned[k] = true
			}
		}
	}
	changes := map[string]any{}
	for k, v := range labels {
		if cur, ok := current[k]; !ok || cur != v {
			changes[k] = v
		}
	}
	for k := range owned {
		if _, keep := labels[k]; !keep {
			if _, ok := current[k]; ok {
				changes[k] = nil
			}
		}
	}
	keys := slices.Sorted(maps.Keys(labels))
	newOwned := strings.Join(keys, ",")
	_, hasAnnotation := annotations[OwnedAnnotation]
	annotationChange := newOwned != annotations[OwnedAnnotation] || (len(keys) > 0 && !hasAnnotation)
	if len(changes) == 0 && !annotationChange {
		return nil
	}
	meta := map[string]any{}
	if len(changes) > 0 {
		meta["labels"] = changes
	}
	if annotationChange {
		if newOwned == "" {
			meta["annotations"] = map[string]any{OwnedAnnotation: nil}
		} else {
			meta["annotations"] = map[string]any{OwnedAnnotation: newOwned}
		}
	}
	return map[string]any{"metadata": meta}
}
