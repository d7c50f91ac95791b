"""The adapters: DynamoDB, EC2, CloudWatch, the front-end's HTTP, and the logs and metrics."""
