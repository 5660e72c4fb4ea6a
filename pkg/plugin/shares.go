package plugin

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
)

// ReasonGPUShareNotEnforced is the Warning event on the pods of a claim that
// got a share of a GPU on a node that cannot enforce shares (MPS off): the
// scheduler keeps the shares within the GPU, but nothing stops a container
// from using more than its share.
const ReasonGPUShareNotEnforced = "GPUShareNotEnforced"

// warnSharesNotEnforced records ReasonGPUShareNotEnforced on every pod that
// the claim is reserved for. Best effort: failures are logged.
func warnSharesNotEnforced(ctx context.Context, client kubernetes.Interface, nodeName string, claim *resourceapi.ResourceClaim) {
	if client == nil {
		return
	}
	msg := fmt.Sprintf("ResourceClaim %s/%s got a share of a GPU, but this node runs the GPU plugin without MPS (chart value mps.enabled=false), "+
		"so the share's memory and compute limits are accounting only: the scheduler keeps the shares within the GPU, but a container can use more "+
		"than its share, time-sliced with the GPU's other shares. Enable MPS to enforce them.", claim.Namespace, claim.Name)
	ctx, cancel := context.WithTimeout(ctx, eventTimeout)
	defer cancel()
	for _, r := range claim.Status.ReservedFor {
		if r.Resource != "pods" || r.APIGroup != "" {
			continue
		}
		pod := corev1.ObjectReference{APIVersion: "v1", Kind: "Pod", Namespace: claim.Namespace, Name: r.Name, UID: r.UID}
		if err := recordEvent(ctx, client, nodeName, pod, claim.Namespace, ReasonGPUShareNotEnforced, msg); err != nil {
			klog.FromContext(ctx).Error(err, "Recording that a GPU share is not enforced", "pod", klog.KRef(claim.Namespace, r.Name))
		}
	}
}
