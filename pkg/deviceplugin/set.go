package deviceplugin

import (
	"context"
	"errors"

	"k8s.io/klog/v2"
)

// Set is the device plugins of one node, one per resource (NewSet).
type Set struct {
	// Plugins are sorted by resource name, ResourceName first.
	Plugins     []*Plugin
	cdiSpecPath string
}

// CDISpecPath is the path of the plugins' CDI spec, or "" without a CDI
// strategy.
func (s *Set) CDISpecPath() string { return s.cdiSpecPath }

// Start starts every plugin (Plugin.Start); after an error the plugins
// started are stopped again.
func (s *Set) Start(ctx context.Context) error {
	for i, p := range s.Plugins {
		if err := p.Start(ctx); err != nil {
			for _, q := range s.Plugins[:i] {
				q.Stop()
			}
			return err
		}
	}
	return nil
}

// Stop stops every plugin.
func (s *Set) Stop() {
	for _, p := range s.Plugins {
		p.Stop()
	}
}

// SetHealth applies the health of the GPU or MIG device id to every plugin
// that advertises it (a GPU's health to all of its MIG devices); an error
// when none does.
func (s *Set) SetHealth(id string, healthy bool) error {
	found := false
	var errs []error
	for _, p := range s.Plugins {
		err := p.SetHealth(id, healthy)
		switch {
		case err == nil:
			found = true
		case errors.Is(err, errNoDevice):
		default:
			found = true
			errs = append(errs, err)
		}
	}
	if !found {
		return errors.Join(append(errs, errors.New("no plugin advertises device "+id))...)
	}
	return errors.Join(errs...)
}

// WatchHealth is Plugin.WatchHealth for all plugins of the set. It blocks;
// run it in its own goroutine, once.
func (s *Set) WatchHealth(ctx context.Context, src HealthSource) {
	logger := klog.FromContext(ctx).WithName("deviceplugin")
	for {
		snap, changed := src.Current()
		for _, d := range snap.Devices {
			if err := s.SetHealth(d.UUID, d.Healthy()); err != nil {
				logger.Error(err, "Health of a GPU the device plugins do not advertise", "uuid", d.UUID)
			} else if !d.Healthy() {
				logger.V(4).Info("GPU unhealthy", "uuid", d.UUID, "reason", d.Reason, "detail", d.Message)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
	}
}
