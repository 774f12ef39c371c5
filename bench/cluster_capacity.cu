// How many clusters of 1, 2, 4 and 8 CTAs fit on the GPU at once when each CTA takes a whole SM (the
// GEMM's shared memory), as cudaOccupancyMaxActiveClusters reports them. A cluster lies within one
// GPC, so GPCs whose SM count the cluster size does not divide leave SMs idle. bench/peer_session.sh
// prints it with every call; the split-K rule of bench/patches/dense_split_k*.patch assumes H100 figures.
//   nvcc -arch=sm_90a -o /tmp/cluster_capacity bench/cluster_capacity.cu && /tmp/cluster_capacity
#include <cuda_runtime.h>

#include <cstdio>

__global__ void whole_sm_kernel() {
  extern __shared__ char smem[];
  if (threadIdx.x == 1u << 20) smem[0] = 0;  // never: the kernel only needs to exist
}

int main() {
  const int smem_bytes = 227 * 1024;
  cudaFuncSetAttribute(whole_sm_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_bytes);
  cudaFuncSetAttribute(whole_sm_kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1);
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) return 1;
  std::printf("%s, %d SMs\n", prop.name, prop.multiProcessorCount);
  for (unsigned size = 1; size <= 8; size *= 2) {
    cudaLaunchAttribute attr{};
    attr.id = cudaLaunchAttributeClusterDimension;
    attr.val.clusterDim.x = size, attr.val.clusterDim.y = 1, attr.val.clusterDim.z = 1;
    cudaLaunchConfig_t cfg{};
    cfg.gridDim = dim3(size * 64);
    cfg.blockDim = dim3(384);
    cfg.dynamicSmemBytes = smem_bytes;
    cfg.attrs = &attr;
    cfg.numAttrs = 1;
    int clusters = 0;
    const cudaError_t err = cudaOccupancyMaxActiveClusters(&clusters, whole_sm_kernel, &cfg);
    std::printf("clusters of %u: %d (%u CTAs)%s%s\n", size, clusters, clusters * size, err ? ": " : "",
                err ? cudaGetErrorString(err) : "");
  }
  return 0;
}
