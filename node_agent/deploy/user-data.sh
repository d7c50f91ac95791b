#!/bin/bash
# cloud-init user data for an Amazon Linux 2023 cache node: memcached and the node agent.
# The agent's code comes from AGENT_URL: a tarball of the repository's node_agent/ directory
# (`tar czf node-agent.tgz node_agent` at the project root, uploaded to S3). The instance profile
# needs s3:GetObject on it and cloudwatch:PutMetricData. Bake both into an image instead to boot
# faster; then this script is only the env file and `systemctl enable --now`.
set -euo pipefail
MEMORY_MB=1024                       # memcached's -m
AGENT_URL="s3://CHANGE-ME/node-agent.tgz"
CURVE_ITEMS=0                        # >0: publish HitsWithin for a cache of that many items

dnf install -y -q memcached python3 python3-boto3 awscli-2
sed -i "s/^CACHESIZE=.*/CACHESIZE=\"${MEMORY_MB}\"/; s/^OPTIONS=.*/OPTIONS=\"\"/" /etc/sysconfig/memcached

mkdir -p /opt/memcache-node-agent
aws s3 cp "$AGENT_URL" /tmp/node-agent.tgz
tar xzf /tmp/node-agent.tgz -C /opt/memcache-node-agent
cp /opt/memcache-node-agent/node_agent/deploy/memcache-node-agent.service /etc/systemd/system/
echo "NODE_AGENT_CURVE_ITEMS=${CURVE_ITEMS}" > /etc/memcache-node-agent.env

systemctl daemon-reload
systemctl enable --now memcached memcache-node-agent
