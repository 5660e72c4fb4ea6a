package dpconfig

import (
	"context"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
)

// NodeLabel selects a node's configuration by name (NVIDIA's label).
const NodeLabel = "nvidia.com/device-plugin.config"

// Select returns the name of the node's configuration among the
// ConfigMap's data (name -> configuration), the way NVIDIA's
// config-manager does: the node label's value when set, else
// defaultName; with neither, the only configuration when there is exactly
// one. A name that is not in data fails.
func Select(data map[string]string, label, defaultName string) (string, error) {
	name, from := label, "node label "+NodeLabel
	if name == "" {
		name, from = defaultName, "default config"
	}
	if name == "" {
		if len(data) == 1 {
			for k := range data {
				return k, nil
			}
		}
		return "", fmt.Errorf("no config selected: set the node label %s or a default config (configs: %v)", NodeLabel, slices.Sorted(maps.Keys(data)))
	}
	if _, ok := data[name]; !ok {
		return "", fmt.Errorf("%s names config %q, which the ConfigMap does not have (configs: %v)", from, name, slices.Sorted(maps.Keys(data)))
	}
	return name, nil
}

// SelectAndParse selects (Select) and parses (Parse) the node's
// configuration; source names the ConfigMap in errors.
func SelectAndParse(source string, data map[string]string, label, defaultName string) (string, *Config, error) {
	name, err := Select(data, label, defaultName)
	if err != nil {
		return "", nil, fmt.Errorf("%s: %w", source, err)
	}
	c, err := Parse(source+"["+name+"]", []byte(data[name]))
	return name, c, err
}

// Watcher follows a ConfigMap of named configurations and the node's
// NodeLabel, and calls OnChange with the node's configuration at start and
// whenever it changes (content or selection); an invalid configuration is
// logged and reported to OnError, and the previous one stays.
type Watcher struct {
	Client      kubernetes.Interface
	Namespace   string
	ConfigMap   string
	NodeName    string
	DefaultName string
	OnChange    func(ctx context.Context, name string, c *Config)
	// OnError, when set, is told of every configuration that cannot be
	// used (missing ConfigMap, bad selection, parse or validation error).
	OnError func(ctx context.Context, err error)

	mu        sync.Mutex
	data      map[string]string
	haveCM    bool
	label     string
	haveNode  bool
	lastName  string
	lastValue *Config
}

// Run watches until ctx ends.
func (w *Watcher) Run(ctx context.Context) {
	logger := klog.LoggerWithValues(klog.FromContext(ctx), "configMap", klog.KRef(w.Namespace, w.ConfigMap), "node", w.NodeName)
	ctx = klog.NewContext(ctx, logger)
	cmLW := &cache.ListWatch{
		ListFunc: func(o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", w.ConfigMap).String()
			return w.Client.CoreV1().ConfigMaps(w.Namespace).List(ctx, o)
		},
		WatchFunc: func(o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", w.ConfigMap).String()
			return w.Client.CoreV1().ConfigMaps(w.Namespace).Watch(ctx, o)
		},
	}
	nodeLW := &cache.ListWatch{
		ListFunc: func(o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", w.NodeName).String()
			return w.Client.CoreV1().Nodes().List(ctx, o)
		},
		WatchFunc: func(o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", w.NodeName).String()
			return w.Client.CoreV1().Nodes().Watch(ctx, o)
		},
	}
	cmInf := cache.NewSharedInformer(cmLW, &corev1.ConfigMap{}, 0)
	nodeInf := cache.NewSharedInformer(nodeLW, &corev1.Node{}, 0)
	onCM := func(obj any, deleted bool) {
		cm, ok := obj.(*corev1.ConfigMap)
		w.mu.Lock()
		if deleted || !ok {
			w.data, w.haveCM = nil, false
		} else {
			w.data, w.haveCM = cm.Data, true
		}
		w.mu.Unlock()
		w.evaluate(ctx)
	}
	onNode := func(obj any) {
		n, ok := obj.(*corev1.Node)
		if !ok {
			return
		}
		w.mu.Lock()
		w.label, w.haveNode = n.Labels[NodeLabel], true
		w.mu.Unlock()
		w.evaluate(ctx)
	}
	_, _ = cmInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { onCM(o, false) },
		UpdateFunc: func(_, o any) { onCM(o, false) },
		DeleteFunc: func(o any) { onCM(o, true) },
	})
	_, _ = nodeInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    onNode,
		UpdateFunc: func(_, o any) { onNode(o) },
	})
	go cmInf.RunWithContext(ctx)
	go nodeInf.RunWithContext(ctx)
	if cache.WaitForCacheSync(ctx.Done(), cmInf.HasSynced, nodeInf.HasSynced) {
		w.mu.Lock()
		missing := !w.haveCM
		w.mu.Unlock()
		if missing {
			w.fail(ctx, fmt.Errorf("ConfigMap %s/%s not found", w.Namespace, w.ConfigMap))
		}
	}
	<-ctx.Done()
}

func (w *Watcher) fail(ctx context.Context, err error) {
	klog.FromContext(ctx).Error(err, "Device plugin config not usable; keeping the current one")
	if w.OnError != nil {
		w.OnError(ctx, err)
	}
}

// evaluate selects and parses the configuration once both the ConfigMap
// and the node are known, and calls OnChange when it differs from the
// last one.
func (w *Watcher) evaluate(ctx context.Context) {
	w.mu.Lock()
	if !w.haveNode || !w.haveCM {
		w.mu.Unlock()
		return
	}
	data, label := w.data, w.label
	w.mu.Unlock()
	name, c, err := SelectAndParse(fmt.Sprintf("ConfigMap %s/%s", w.Namespace, w.ConfigMap), data, label, w.DefaultName)
	if err != nil {
		w.fail(ctx, err)
		return
	}
	w.mu.Lock()
	same := name == w.lastName && reflect.DeepEqual(c, w.lastValue)
	w.lastName, w.lastValue = name, c
	w.mu.Unlock()
	if same {
		return
	}
	klog.FromContext(ctx).Info("Device plugin config selected", "config", name, "nodeLabel", label)
	w.OnChange(ctx, name, c)
}
