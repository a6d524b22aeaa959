"""Wire models of `/v1/vector_stores` (stores, their files, file batches and search)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from app.errors import InvalidRequest

MetadataKey = Annotated[str, StringConstraints(max_length=64)]
Metadata = Annotated[
    dict[MetadataKey, Annotated[str, StringConstraints(max_length=512)]], Field(max_length=16)
]
AttributeValue = Annotated[str, StringConstraints(max_length=512)] | bool | float
Attributes = Annotated[dict[MetadataKey, AttributeValue], Field(max_length=16)]
FileId = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StaticChunking(Strict):
    max_chunk_size_tokens: int = Field(ge=100, le=4096)
    chunk_overlap_tokens: int = Field(ge=0)


class AutoChunkingStrategy(Strict):
    """The default: static chunks of 800 tokens overlapping by 400."""

    type: Literal["auto"]

    def sizes(self) -> tuple[int, int]:
        return 800, 400


class StaticChunkingStrategy(Strict):
    type: Literal["static"]
    static: StaticChunking

    def sizes(self) -> tuple[int, int]:
        """(max tokens, overlap); the overlap is at most half the size, as OpenAI requires."""
        size, overlap = self.static.max_chunk_size_tokens, self.static.chunk_overlap_tokens
        if overlap > size // 2:
            raise InvalidRequest(
                "chunk_overlap_tokens must not exceed half of max_chunk_size_tokens.",
                param="chunking_strategy.static.chunk_overlap_tokens",
            )
        return size, overlap


ChunkingStrategy = Annotated[AutoChunkingStrategy | StaticChunkingStrategy, Field(discriminator="type")]
AUTO_CHUNKING = AutoChunkingStrategy(type="auto")

Scalar = Annotated[str, StringConstraints(max_length=512)] | bool | float


class ComparisonFilter(Strict):
    """Compare the attribute `key` with `value`."""

    type: Literal["eq", "ne", "gt", "gte", "lt", "lte", "in", "nin"]
    key: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    value: Scalar | Annotated[list[Scalar], Field(max_length=100)]


class CompoundFilter(Strict):
    """All (`and`) or any (`or`) of `filters` (at most 8 deep and 200 parts in all)."""

    type: Literal["and", "or"]
    filters: list[ComparisonFilter | CompoundFilter] = Field(min_length=1, max_length=200)


Filters = ComparisonFilter | CompoundFilter


class ExpiresAfter(Strict):
    anchor: Literal["last_active_at"]
    days: int = Field(ge=1, le=365)


class CreateVectorStoreRequest(Strict):
    name: Annotated[str, StringConstraints(max_length=256)] = ""
    description: Annotated[str, StringConstraints(max_length=512)] | None = None
    file_ids: list[FileId] = Field(default_factory=list, max_length=500)
    expires_after: ExpiresAfter | None = None
    chunking_strategy: ChunkingStrategy | None = None
    metadata: Metadata | None = None


class UpdateVectorStoreRequest(Strict):
    name: Annotated[str, StringConstraints(max_length=256)] | None = None
    expires_after: ExpiresAfter | None = None
    metadata: Metadata | None = None


class CreateVectorStoreFileRequest(Strict):
    file_id: FileId
    attributes: Attributes | None = None
    chunking_strategy: ChunkingStrategy | None = None


class UpdateVectorStoreFileAttributesRequest(Strict):
    attributes: Attributes | None


class BatchFile(Strict):
    file_id: FileId
    attributes: Attributes | None = None
    chunking_strategy: ChunkingStrategy | None = None


class CreateVectorStoreFileBatchRequest(Strict):
    file_ids: list[FileId] | None = Field(default=None, max_length=500)
    files: list[BatchFile] | None = Field(default=None, max_length=500)
    attributes: Attributes | None = None
    chunking_strategy: ChunkingStrategy | None = None

    def entries(self) -> list[BatchFile]:
        if (self.file_ids is None) == (self.files is None):
            raise InvalidRequest("Give exactly one of file_ids and files.", param="file_ids")
        if self.files is not None:
            return self.files
        return [
            BatchFile(file_id=f, attributes=self.attributes, chunking_strategy=self.chunking_strategy)
            for f in self.file_ids or ()
        ]


class HybridSearch(Strict):
    embedding_weight: float = Field(ge=0)
    text_weight: float = Field(ge=0)


class RankingOptions(Strict):
    ranker: Literal["none", "auto", "default-2024-11-15"] = "auto"
    score_threshold: float = Field(default=0.0, ge=0, le=1)
    hybrid_search: HybridSearch | None = None


class VectorStoreSearchRequest(Strict):
    query: (
        Annotated[str, StringConstraints(min_length=1, max_length=4096)]
        | Annotated[
            list[Annotated[str, StringConstraints(min_length=1, max_length=4096)]],
            Field(min_length=1, max_length=16),
        ]
    )
    rewrite_query: bool = False
    max_num_results: int = Field(default=10, ge=1, le=50)
    filters: Filters | None = None
    """A comparison or compound filter on file attributes."""
    ranking_options: RankingOptions | None = None
