/*
 * The C types of the NVML API that the mock libnvidia-ml.so.1 exports,
 * written for this project: the same ABI (sizes, field order, handle
 * kinds) as the NVIDIA header that go-nvml ships (pkg/nvml/nvml.h of the
 * go-nvml version in go.mod), restricted to what the exported functions
 * take. types.go checks at compile time that every struct here has the size
 * of go-nvml's Go type generated from that header.
 */
#ifndef GPUDRA_MOCKNVML_H
#define GPUDRA_MOCKNVML_H

/* NVML's return codes and enums are C enums: int sized. */
typedef int nvmlReturn_t;

/* Opaque handles: pointers to structures only the library knows. The mock
 * hands out distinct C allocations, never Go pointers. */
typedef struct nvmlDevice_st *nvmlDevice_t;
typedef struct nvmlEventSet_st *nvmlEventSet_t;
typedef struct nvmlGpuInstance_st *nvmlGpuInstance_t;
typedef struct nvmlComputeInstance_st *nvmlComputeInstance_t;

/* Buffer sizes. */
#define MOCKNVML_PCI_BUS_ID_LEGACY_SIZE 16 /* NVML_DEVICE_PCI_BUS_ID_BUFFER_V2_SIZE */
#define MOCKNVML_PCI_BUS_ID_SIZE 32        /* NVML_DEVICE_PCI_BUS_ID_BUFFER_SIZE */
#define MOCKNVML_NAME_V2_SIZE 96           /* NVML_DEVICE_NAME_V2_BUFFER_SIZE */

typedef struct {
	char busIdLegacy[MOCKNVML_PCI_BUS_ID_LEGACY_SIZE];
	unsigned int domain;
	unsigned int bus;
	unsigned int device;
	unsigned int pciDeviceId;
	unsigned int pciSubSystemId;
	char busId[MOCKNVML_PCI_BUS_ID_SIZE];
} nvmlPciInfo_t;

typedef struct {
	unsigned long long total;
	unsigned long long free;
	unsigned long long used;
} nvmlMemory_t;

typedef struct {
	unsigned int version;
	unsigned long long total;
	unsigned long long reserved;
	unsigned long long free;
	unsigned long long used;
} nvmlMemory_v2_t;

typedef struct {
	nvmlDevice_t device;
	unsigned long long eventType;
	unsigned long long eventData;
	unsigned int gpuInstanceId;
	unsigned int computeInstanceId;
} nvmlEventData_t;

typedef struct {
	unsigned int start;
	unsigned int size;
} nvmlGpuInstancePlacement_t;

typedef struct {
	unsigned int id;
	unsigned int isP2pSupported;
	unsigned int sliceCount;
	unsigned int instanceCount;
	unsigned int multiprocessorCount;
	unsigned int copyEngineCount;
	unsigned int decoderCount;
	unsigned int encoderCount;
	unsigned int jpegCount;
	unsigned int ofaCount;
	unsigned long long memorySizeMB;
} nvmlGpuInstanceProfileInfo_t;

/* The versioned profile structures (v2, v3) are told apart by their version
 * field; the functions taking them are declared with the v2 type. */
typedef struct {
	unsigned int version;
	unsigned int id;
	unsigned int isP2pSupported;
	unsigned int sliceCount;
	unsigned int instanceCount;
	unsigned int multiprocessorCount;
	unsigned int copyEngineCount;
	unsigned int decoderCount;
	unsigned int encoderCount;
	unsigned int jpegCount;
	unsigned int ofaCount;
	unsigned long long memorySizeMB;
	char name[MOCKNVML_NAME_V2_SIZE];
} nvmlGpuInstanceProfileInfo_v2_t;

typedef struct {
	nvmlDevice_t device;
	unsigned int id;
	unsigned int profileId;
	nvmlGpuInstancePlacement_t placement;
} nvmlGpuInstanceInfo_t;

typedef struct {
	unsigned int start;
	unsigned int size;
} nvmlComputeInstancePlacement_t;

typedef struct {
	unsigned int id;
	unsigned int sliceCount;
	unsigned int instanceCount;
	unsigned int multiprocessorCount;
	unsigned int sharedCopyEngineCount;
	unsigned int sharedDecoderCount;
	unsigned int sharedEncoderCount;
	unsigned int sharedJpegCount;
	unsigned int sharedOfaCount;
} nvmlComputeInstanceProfileInfo_t;

typedef struct {
	unsigned int version;
	unsigned int id;
	unsigned int sliceCount;
	unsigned int instanceCount;
	unsigned int multiprocessorCount;
	unsigned int sharedCopyEngineCount;
	unsigned int sharedDecoderCount;
	unsigned int sharedEncoderCount;
	unsigned int sharedJpegCount;
	unsigned int sharedOfaCount;
	char name[MOCKNVML_NAME_V2_SIZE];
} nvmlComputeInstanceProfileInfo_v2_t;

typedef struct {
	nvmlDevice_t device;
	nvmlGpuInstance_t gpuInstance;
	unsigned int id;
	unsigned int profileId;
	nvmlComputeInstancePlacement_t placement;
} nvmlComputeInstanceInfo_t;

/* NVLink fabric (NVML_GPU_FABRIC_UUID_LEN 16). nvmlGpuFabricState_t is an
 * unsigned char. */
#define MOCKNVML_GPU_FABRIC_UUID_LEN 16

typedef struct {
	unsigned char clusterUuid[MOCKNVML_GPU_FABRIC_UUID_LEN];
	nvmlReturn_t status;
	unsigned int cliqueId;
	unsigned char state;
} nvmlGpuFabricInfo_t;

typedef struct {
	unsigned int version;
	unsigned char clusterUuid[MOCKNVML_GPU_FABRIC_UUID_LEN];
	nvmlReturn_t status;
	unsigned int cliqueId;
	unsigned char state;
	unsigned int healthMask;
} nvmlGpuFabricInfo_v2_t;

/* nvmlGpuFabricInfoV_t is the v3 layout; v2 callers pass the shorter
 * nvmlGpuFabricInfo_v2_t, told apart by the version field. */
typedef struct {
	unsigned int version;
	unsigned char clusterUuid[MOCKNVML_GPU_FABRIC_UUID_LEN];
	nvmlReturn_t status;
	unsigned int cliqueId;
	unsigned char state;
	unsigned int healthMask;
	unsigned char healthSummary;
} nvmlGpuFabricInfo_v3_t;
typedef nvmlGpuFabricInfo_v3_t nvmlGpuFabricInfoV_t;

typedef struct {
	unsigned int version;
	unsigned int value; /* nvmlDeviceAddressingModeType_t */
} nvmlDeviceAddressingMode_t;

#endif
