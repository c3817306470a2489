package clients_test

import (
	"log"

	"github.com/nsqio/go-nsq"
	"github.com/sluicemq/sluice/clients"
)

// A producer that keeps publishing while any of its nsqds is up.
func ExamplePool() {
	pool, err := clients.NewPool(clients.PoolOptions{
		Addrs:  []string{"nsqd-1:4150", "nsqd-2:4150"},
		Config: nsq.NewConfig(),
		Mode:   clients.RoundRobin,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Stop()
	// Returns nil once one nsqd acknowledged the message.
	if err := pool.Publish("orders", []byte(`{"id":1}`)); err != nil {
		log.Printf("no nsqd accepted the message: %v", err)
	}
}
