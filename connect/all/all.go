// Package all registers every connector of the default binary: import it
// for its side effect. A program that needs fewer brokers imports only
// their packages, and links only their client libraries.
package all

import (
	_ "github.com/flowrun/flowrun/connect/file"     // paths, globs, -, file://
	_ "github.com/flowrun/flowrun/connect/nats"     // nats://
	_ "github.com/flowrun/flowrun/connect/rabbitmq" // amqp://
	_ "github.com/flowrun/flowrun/connect/redis"    // redis://
)
