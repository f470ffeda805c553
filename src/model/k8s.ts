// The subset of Kubernetes objects the proxy reads, as the API server serves them.
// Every field is optional here: input is untrusted until src/model/parse.ts has checked it.

export interface ObjectMeta {
  name?: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  deletionTimestamp?: string;
}

export interface ServicePortSpec {
  name?: string;
  protocol?: string;
  port?: number;
  targetPort?: number | string;
  nodePort?: number;
}

export interface Service {
  apiVersion?: string;
  kind?: 'Service';
  metadata?: ObjectMeta;
  spec?: {
    type?: string;
    clusterIP?: string;
    clusterIPs?: string[];
    ipFamilies?: string[];
    ports?: ServicePortSpec[];
    externalIPs?: string[];
    loadBalancerSourceRanges?: string[];
    sessionAffinity?: string;
    sessionAffinityConfig?: { clientIP?: { timeoutSeconds?: number } };
    externalTrafficPolicy?: string;
    internalTrafficPolicy?: string;
    healthCheckNodePort?: number;
    externalName?: string;
    trafficDistribution?: string;
  };
  status?: {
    loadBalancer?: { ingress?: { ip?: string; hostname?: string; ipMode?: string }[] };
  };
}

export interface EndpointSlice {
  apiVersion?: string;
  kind?: 'EndpointSlice';
  metadata?: ObjectMeta;
  addressType?: string;
  ports?: { name?: string; protocol?: string; port?: number | null; appProtocol?: string }[] | null;
  endpoints?:
    | {
        addresses?: string[];
        conditions?: { ready?: boolean | null; serving?: boolean | null; terminating?: boolean | null };
        nodeName?: string;
        zone?: string;
        hostname?: string;
        hints?: { forZones?: { name?: string }[]; forNodes?: { name?: string }[] };
        deprecatedTopology?: Record<string, string>;
        /** discovery.k8s.io/v1beta1 only: kubernetes.io/hostname and topology.kubernetes.io/zone live here. */
        topology?: Record<string, string>;
      }[]
    | null;
}

export interface Node {
  apiVersion?: string;
  kind?: 'Node';
  metadata?: ObjectMeta;
  spec?: { podCIDR?: string; podCIDRs?: string[] };
  status?: { addresses?: { type?: string; address?: string }[] };
}

export type KubeObject = Service | EndpointSlice | Node;

export const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';
export const SERVICE_PROXY_NAME_LABEL = 'service.kubernetes.io/service-proxy-name';
export const HEADLESS_LABEL = 'service.kubernetes.io/headless';
export const HOSTNAME_LABEL = 'kubernetes.io/hostname';
export const ZONE_LABEL = 'topology.kubernetes.io/zone';
export const TRIGGER_TIME_ANNOTATION = 'endpoints.kubernetes.io/last-change-trigger-time';
